package forwardproxy

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	"github.com/dustin/go-humanize"
)

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	forward_proxy {
//	    allow_source <ranges...>
//	    basic_auth [<hash_algorithm> [<realm>]] {
//	        <username> <hashed_password>
//	    }
//	    allow_destination <names|wildcards|ranges...>
//	    deny_destination <names|wildcards|ranges...>
//	    block_list <file>
//	    block_list_interval <duration>
//	    connect_ports <ports...>
//	    http_ports <ports...>
//	    private_destinations deny|allow
//	    hide_client [on|off]
//	    pac <path>
//	    dial_timeout <duration>
//	    idle_timeout <duration>
//	    resolvers <dns servers...>
//	    max_header_size <size>
//	    limits {
//	        <directives...>
//	    }
//	}
//
// Values are checked here with the same parsers Provision uses, so that a
// bad value is reported with its line.
func (fp *ForwardProxy) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("forward_proxy: takes no arguments, got %q (options go in a block)", d.Val())
	}
	for d.NextBlock(0) {
		opt := d.Val()
		switch opt {
		case "allow_source":
			args, err := needArgs(d, opt)
			if err != nil {
				return err
			}
			if _, err := parseSources(args); err != nil {
				return d.Err(err.Error())
			}
			fp.AllowSource = append(fp.AllowSource, args...)
		case "allow_destination", "deny_destination":
			args, err := needArgs(d, opt)
			if err != nil {
				return err
			}
			if _, _, err := parseDestinations(opt, args); err != nil {
				return d.Err(err.Error())
			}
			if opt == "allow_destination" {
				fp.AllowDestination = append(fp.AllowDestination, args...)
			} else {
				fp.DenyDestination = append(fp.DenyDestination, args...)
			}
		case "basic_auth":
			if err := fp.unmarshalBasicAuth(d); err != nil {
				return err
			}
		case "block_list", "pac":
			v, err := oneArg(d, opt)
			if err != nil {
				return err
			}
			if opt == "block_list" {
				fp.BlockList = v
			} else {
				fp.PAC = v
			}
		case "connect_ports", "http_ports":
			args, err := needArgs(d, opt)
			if err != nil {
				return err
			}
			for _, a := range args {
				p, err := strconv.ParseUint(a, 10, 16)
				if err != nil || p == 0 {
					return d.Errf("forward_proxy: %s: %q is not a port (1-65535)", opt, a)
				}
				if opt == "connect_ports" {
					fp.ConnectPorts = append(fp.ConnectPorts, uint16(p))
				} else {
					fp.HTTPPorts = append(fp.HTTPPorts, uint16(p))
				}
			}
		case "private_destinations":
			v, err := oneArg(d, opt)
			if err != nil {
				return err
			}
			if _, err := parsePrivate(v); err != nil {
				return d.Err(err.Error())
			}
			fp.PrivateDestinations = v
		case "hide_client":
			on := true
			if d.NextArg() {
				switch d.Val() {
				case "on":
				case "off":
					on = false
				default:
					return d.Errf("forward_proxy: hide_client %q is not on or off", d.Val())
				}
			}
			if d.NextArg() {
				return d.Errf("forward_proxy: hide_client takes at most one value, got extra %q", d.Val())
			}
			fp.HideClient = &on
		case "dial_timeout", "idle_timeout", "block_list_interval":
			v, err := oneArg(d, opt)
			if err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur < 0 {
				return d.Errf("forward_proxy: %s %q is not a duration", opt, v)
			}
			switch opt {
			case "dial_timeout":
				fp.DialTimeout = caddy.Duration(dur)
			case "idle_timeout":
				fp.IdleTimeout = caddy.Duration(dur)
			default:
				fp.BlockListInterval = caddy.Duration(dur)
			}
		case "resolvers":
			args, err := needArgs(d, opt)
			if err != nil {
				return err
			}
			if _, err := newResolver(args, 0); err != nil {
				return d.Err(err.Error())
			}
			fp.Resolvers = append(fp.Resolvers, args...)
		case "limits":
			if fp.limitsSegment != nil {
				return d.Errf("forward_proxy: limits given twice")
			}
			fp.limitsSegment = d.NewFromNextSegment()
		case "max_header_size":
			v, err := oneArg(d, opt)
			if err != nil {
				return err
			}
			size, err := humanize.ParseBytes(v)
			if err != nil || size == 0 || size > 1<<30 {
				return d.Errf("forward_proxy: max_header_size %q is not a size between 1B and 1GiB", v)
			}
			fp.MaxHeaderSize = int(size)
		default:
			return d.Errf("forward_proxy: unknown option %q", opt)
		}
	}
	return nil
}

// FinalizeUnmarshalCaddyfile parses the limits block, whose directives
// need an httpcaddyfile.Helper (as reverse_proxy's handle_response does).
func (fp *ForwardProxy) FinalizeUnmarshalCaddyfile(h httpcaddyfile.Helper) error {
	if fp.limitsSegment == nil {
		return nil
	}
	handler, err := httpcaddyfile.ParseSegmentAsSubroute(h.WithDispenser(fp.limitsSegment))
	if err != nil {
		return err
	}
	sub, ok := handler.(*caddyhttp.Subroute)
	if !ok {
		return h.Errf("forward_proxy: limits was not parsed as routes")
	}
	fp.Limits = sub.Routes
	fp.limitsSegment = nil
	return nil
}

// unmarshalBasicAuth reads a basic_auth block as Caddy's basic_auth
// directive writes it.
func (fp *ForwardProxy) unmarshalBasicAuth(d *caddyfile.Dispenser) error {
	ba := &caddyauth.HTTPBasicAuth{}
	args := d.RemainingArgs()
	if len(args) > 2 {
		return d.Errf("forward_proxy: basic_auth takes at most a hash algorithm and a realm, got %q", args)
	}
	if len(args) > 0 {
		switch args[0] {
		case "bcrypt":
			ba.HashRaw = caddyconfig.JSONModuleObject(caddyauth.BcryptHash{}, "algorithm", "bcrypt", nil)
		case "argon2id":
			ba.HashRaw = caddyconfig.JSONModuleObject(caddyauth.Argon2idHash{}, "algorithm", "argon2id", nil)
		default:
			return d.Errf("forward_proxy: basic_auth: hash algorithm %q is not bcrypt or argon2id", args[0])
		}
	}
	if len(args) > 1 {
		ba.Realm = args[1]
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		user := d.Val()
		if !d.NextArg() {
			return d.Errf("forward_proxy: basic_auth: user %q has no password hash", user)
		}
		hash := d.Val()
		if d.NextArg() {
			return d.Errf("forward_proxy: basic_auth: user %q: extra value %q after the hash", user, d.Val())
		}
		ba.AccountList = append(ba.AccountList, caddyauth.Account{Username: user, Password: hash})
	}
	if len(ba.AccountList) == 0 {
		return d.Errf("forward_proxy: basic_auth needs at least one user")
	}
	fp.BasicAuth = ba
	return nil
}

func needArgs(d *caddyfile.Dispenser, opt string) ([]string, error) {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return nil, d.Errf("forward_proxy: %s needs at least one value", opt)
	}
	return args, nil
}

func oneArg(d *caddyfile.Dispenser, opt string) (string, error) {
	args := d.RemainingArgs()
	if len(args) != 1 {
		return "", d.Errf("forward_proxy: %s takes one value, got %d", opt, len(args))
	}
	return args[0], nil
}

var _ caddyfile.Unmarshaler = (*ForwardProxy)(nil)
