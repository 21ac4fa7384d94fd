package hideorigin

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/rampart-edge/caddy-rampart/modules/hideorigin/scrub"
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
func (h *HideOrigin) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
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
			if h.Errors != "generic" && h.Errors != "passthrough" {
				return d.Errf("hide_origin: errors %q is not generic or passthrough", h.Errors)
			}
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
	}
	// check what can be checked before provisioning, for a clear adapt error
	for _, o := range h.Origins {
		if _, err := scrub.ParseIdentity(o); err != nil && !hasPlaceholder(o) {
			return d.Errf("hide_origin: origin: %v", err)
		}
	}
	if h.Public != "" && !hasPlaceholder(h.Public) {
		if _, err := scrub.ParsePublic(h.Public); err != nil {
			return d.Errf("hide_origin: %v", err)
		}
	}
	if _, err := scrub.NewStripSet(h.Strip, h.Keep); err != nil {
		return d.Errf("hide_origin: %v", err)
	}
	if h.Sign != "" && !hasPlaceholder(h.Sign) {
		if _, err := scrub.NewKey(h.Sign); err != nil {
			return d.Errf("hide_origin: sign: %v", err)
		}
	}
	return nil
}

func hasPlaceholder(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '{' {
			return true
		}
	}
	return false
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	origin_lock [<key>] {
//	    key <key> [<previous key>...]
//	    max_skew <duration>
//	    allow <cidr>...
//	    deny 403 | close
//	    replay_cache <entries>
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
			if err != nil || dur <= 0 {
				return d.Errf("origin_lock: max_skew %q is not a positive duration", d.Val())
			}
			l.MaxSkew = caddy.Duration(dur)
		case "allow":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("origin_lock: allow needs at least one CIDR")
			}
			for _, a := range args {
				if _, err := parsePrefix(a); err != nil {
					return d.Errf("origin_lock: allow %q is not a CIDR or IP address", a)
				}
			}
			l.Allow = append(l.Allow, args...)
		case "deny":
			if !d.NextArg() {
				return d.ArgErr()
			}
			l.Deny = d.Val()
			if l.Deny != "403" && l.Deny != "close" {
				return d.Errf("origin_lock: deny %q is not 403 or close", l.Deny)
			}
		case "replay_cache":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n <= 0 {
				return d.Errf("origin_lock: replay_cache %q is not a positive number", d.Val())
			}
			l.ReplayCache = n
		default:
			return d.Errf("origin_lock: unknown option %q", opt)
		}
	}
	if len(l.Keys) == 0 {
		return d.Errf("origin_lock: at least one key is required")
	}
	for _, k := range l.Keys {
		if !hasPlaceholder(k) {
			if _, err := scrub.NewKey(k); err != nil {
				return d.Errf("origin_lock: key: %v", err)
			}
		}
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*HideOrigin)(nil)
	_ caddyfile.Unmarshaler = (*OriginLock)(nil)
)
