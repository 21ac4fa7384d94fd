package hideorigin

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	hide_origin [<origin>...] {
//	    origin <origin>...
//	    public <scheme://host[:port]>
//	    strip <header>...
//	    keep <header>...
//	    body <media type>... | off
//	    errors generic | passthrough
//	    sign <key>
//	    no_auto_upstreams
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	h.Origins = append(h.Origins, d.RemainingArgs()...)
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "origin":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("hide_origin: origin needs at least one address or host name")
			}
			h.Origins = append(h.Origins, args...)
		case "public":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.Public = d.Val()
			if d.NextArg() {
				return d.Errf("hide_origin: public takes one value, got extra %q", d.Val())
			}
		case "strip", "keep":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("hide_origin: %s needs at least one header name", opt)
			}
			if opt == "strip" {
				h.Strip = append(h.Strip, args...)
			} else {
				h.Keep = append(h.Keep, args...)
			}
		case "body":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("hide_origin: body needs media types or off")
			}
			if len(args) == 1 && args[0] == "off" {
				h.BodyOff = true
				continue
			}
			h.Body = append(h.Body, args...)
		case "errors":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.Errors = d.Val()
		case "sign":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.Sign = d.Val()
			if d.NextArg() {
				return d.Errf("hide_origin: sign takes one key")
			}
		case "no_auto_upstreams":
			h.NoAutoUpstreams = true
		default:
			return d.Errf("hide_origin: unknown option %q", opt)
		}
		if err := h.checkOptions(); err != nil {
			return d.WrapErr(err)
		}
	}
	return nil
}

// checkOptions runs Provision's checks of the options parsed so far on a
// copy of h, so UnmarshalCaddyfile reports a bad value at its own line and
// the config it adapts to carries nothing but the options.
func (h Handler) checkOptions() error { return h.provisionOptions(true) }

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	origin_lock [<key>] {
//	    key <key> [<previous key>...]
//	    max_skew <duration>
//	    allow <cidr>...
//	    deny 403 | close
//	    replay_cache <entries>
//	    replay_cache cluster [local|deny]
//	}
func (l *OriginLock) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	l.Keys = append(l.Keys, d.RemainingArgs()...)
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "key":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("origin_lock: key needs at least one key")
			}
			l.Keys = append(l.Keys, args...)
		case "max_skew":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return d.Errf("origin_lock: max_skew %q is not a duration", d.Val())
			}
			l.MaxSkew = caddy.Duration(dur)
		case "allow":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("origin_lock: allow needs at least one CIDR")
			}
			l.Allow = append(l.Allow, args...)
		case "deny":
			if !d.NextArg() {
				return d.ArgErr()
			}
			l.Deny = d.Val()
		case "replay_cache":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "cluster" {
				if err := l.unmarshalReplayCluster(d); err != nil {
					return err
				}
				continue
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil {
				return d.Errf("origin_lock: replay_cache %q is not a number", d.Val())
			}
			l.ReplayCache = n
		default:
			return d.Errf("origin_lock: unknown option %q", opt)
		}
		if err := l.checkOptions(); err != nil {
			return d.WrapErr(err)
		}
	}
	return nil
}

// checkOptions runs Provision's checks of the options parsed so far on a
// copy of l, as Handler.checkOptions does.
func (l OriginLock) checkOptions() error { return l.provisionOptions(true) }

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Handler)(nil)
	_ caddyfile.Unmarshaler = (*OriginLock)(nil)
)
