package passthrough

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/mholt/caddy-l4/layer4"

	"github.com/rampart-edge/caddy-rampart/modules/passthrough/engine"
)

// UnmarshalCaddyfile parses the `passthrough` global option:
//
//	passthrough {
//		listener_wrappers {        # run before the SNI routes, in order
//			proxy_v2 { ... }
//			stick <table> { ... }
//		}
//		servers <name...>          # default: every server on the HTTPS port
//		<routes and options of the passthrough listener wrapper>
//	}
//
// The routes become a "passthrough" listener wrapper appended after the
// listener_wrappers.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // option name
	if d.NextArg() {
		return d.ArgErr()
	}
	lw := new(ListenerWrapper)
	p := newRouteParser()
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "listener_wrappers":
			if d.NextArg() {
				return d.ArgErr()
			}
			for inner := d.Nesting(); d.NextBlock(inner); {
				name := d.Val()
				if name == "tls" || name == "passthrough" {
					return d.Errf("passthrough listener_wrappers: %q cannot go here: the passthrough routes come after these wrappers and the server's own tls after them", name)
				}
				unm, err := caddyfile.UnmarshalModule(d, "caddy.listeners."+name)
				if err != nil {
					return fmt.Errorf("passthrough listener_wrappers: %v", err)
				}
				w, ok := unm.(caddy.ListenerWrapper)
				if !ok {
					return d.Errf("passthrough listener_wrappers: module %q is not a listener wrapper", name)
				}
				a.ListenerWrappersRaw = append(a.ListenerWrappersRaw,
					caddyconfig.JSONModuleObject(w, "wrapper", w.(caddy.Module).CaddyModule().ID.Name(), nil))
			}
		case "servers":
			a.Servers = d.RemainingArgs()
			if len(a.Servers) == 0 {
				return d.Errf("passthrough servers: missing server names")
			}
		default:
			if err := p.line(d, lw); err != nil {
				return err
			}
		}
	}
	if err := p.finish(d, lw); err != nil {
		return err
	}
	a.ListenerWrappersRaw = append(a.ListenerWrappersRaw,
		caddyconfig.JSONModuleObject(lw, "wrapper", "passthrough", nil))
	return nil
}

// UnmarshalCaddyfile parses the passthrough listener wrapper, for a
// server's listener_wrappers (before tls):
//
//	passthrough {
//		matching_timeout <duration>
//		non_tls close|pass
//		<name> <upstream...> [{
//			lb_policy round_robin|least_conn|random|first|ip_hash
//			health_interval <duration>
//			health_timeout <duration>
//			health_passes <n>
//			health_fails <n>
//			health_port <port>
//			proxy_protocol v2 [authority] [alpn] [crc32c] [none]
//			idle_timeout <duration>
//			dial_timeout <duration>
//			name <metrics route name>
//			track <table> [<key>]
//			reject <condition>
//		}]
//		default <upstream...> [{ ... }]
//	}
//
// <name> is an exact host name, a wildcard "*.example.net" (one label) or a
// regular expression "~^api-[0-9]+\.example\.net$". Exact names are tried
// first, then wildcards (longest first), then expressions in the order
// written, then default.
func (lw *ListenerWrapper) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // wrapper name
	if d.NextArg() {
		return d.ArgErr()
	}
	p := newRouteParser()
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := p.line(d, lw); err != nil {
			return err
		}
	}
	return p.finish(d, lw)
}

// routeEntry is one parsed name line.
type routeEntry struct {
	pattern engine.Pattern
	isDef   bool
	handler Handler
	track   json.RawMessage
	order   int
}

// routeParser accumulates the name lines of a passthrough block.
type routeParser struct {
	entries []routeEntry
	nonTLS  string
	seen    map[string]bool
}

func newRouteParser() *routeParser {
	return &routeParser{nonTLS: "close", seen: map[string]bool{}}
}

// line parses one line of the block (an option or a name line).
func (p *routeParser) line(d *caddyfile.Dispenser, lw *ListenerWrapper) error {
	switch d.Val() {
	case "matching_timeout":
		dur, err := durationArg(d, "passthrough matching_timeout")
		if err != nil {
			return err
		}
		lw.MatchingTimeout = caddy.Duration(dur)
		return nil
	case "non_tls":
		if !d.NextArg() || (d.Val() != "close" && d.Val() != "pass") || d.NextArg() {
			return d.Errf("passthrough non_tls: want `close` or `pass`")
		}
		p.nonTLS = d.Val()
		return nil
	}
	e := routeEntry{order: len(p.entries)}
	name := d.Val()
	if name == "default" {
		e.isDef = true
		e.handler.Route = "default"
		e.handler.SkipManaged = true
	} else {
		pat, err := engine.ParsePattern(name)
		if err != nil {
			return d.Errf("passthrough: %v", err)
		}
		e.pattern = pat
		e.handler.Route = pat.String()
	}
	if p.seen[e.handler.Route] {
		return d.Errf("passthrough: name %q given twice", name)
	}
	p.seen[e.handler.Route] = true
	e.handler.Upstreams = d.RemainingArgs()
	if len(e.handler.Upstreams) == 0 {
		return d.Errf("passthrough %s: missing upstream addresses (host:port)", name)
	}
	for _, u := range e.handler.Upstreams {
		if err := checkUpstream(u); err != nil {
			return d.Errf("passthrough %s: upstream %q: %v", name, u, err)
		}
	}
	var trackArgs []string
	var rejects [][]string
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		where := "passthrough " + name + " " + opt
		h := &e.handler
		switch opt {
		case "lb_policy":
			if !d.NextArg() || d.NextArg() {
				return d.Errf("%s: want one policy name", where)
			}
			if _, err := engine.ParsePolicy(d.Val()); err != nil {
				return d.Errf("%s: %v", where, err)
			}
			h.LBPolicy = d.Val()
		case "health_interval", "health_timeout":
			dur, err := durationArg(d, where)
			if err != nil {
				return err
			}
			if h.HealthChecks == nil {
				h.HealthChecks = new(HealthChecks)
			}
			if opt == "health_interval" {
				h.HealthChecks.Interval = caddy.Duration(dur)
			} else {
				h.HealthChecks.Timeout = caddy.Duration(dur)
			}
		case "health_passes", "health_fails", "health_port":
			n, err := intArg(d, where)
			if err != nil {
				return err
			}
			if h.HealthChecks == nil {
				h.HealthChecks = new(HealthChecks)
			}
			switch opt {
			case "health_passes":
				h.HealthChecks.Passes = n
			case "health_fails":
				h.HealthChecks.Fails = n
			default:
				if n > 65535 {
					return d.Errf("%s: port %d out of range", where, n)
				}
				h.HealthChecks.Port = n
			}
		case "proxy_protocol":
			if !d.NextArg() || d.Val() != "v2" {
				return d.Errf("%s: only `v2` is supported (with optional TLVs authority, alpn, crc32c or none)", where)
			}
			h.ProxyProtocol = "v2"
			for d.NextArg() {
				if !slices.Contains([]string{"authority", "alpn", "crc32c", "none"}, d.Val()) {
					return d.Errf("%s: unknown TLV %q (want authority, alpn, crc32c or none)", where, d.Val())
				}
				h.ProxyTLVs = append(h.ProxyTLVs, d.Val())
			}
		case "idle_timeout", "dial_timeout":
			dur, err := durationArg(d, where)
			if err != nil {
				return err
			}
			if opt == "idle_timeout" {
				h.IdleTimeout = caddy.Duration(dur)
			} else {
				h.DialTimeout = caddy.Duration(dur)
			}
		case "name":
			if !d.NextArg() || d.NextArg() {
				return d.Errf("%s: want one route name", where)
			}
			h.Route = d.Val()
		case "track":
			trackArgs = d.RemainingArgs()
			if len(trackArgs) == 0 || len(trackArgs) > 2 {
				return d.Errf("%s: want `track <table> [<key>]`", where)
			}
		case "reject":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("%s: missing condition", where)
			}
			rejects = append(rejects, args)
		default:
			return d.Errf("passthrough %s: unknown option %q", name, opt)
		}
	}
	if len(rejects) > 0 && trackArgs == nil {
		return d.Errf("passthrough %s: reject needs track <table> [<key>]", name)
	}
	if trackArgs != nil {
		track, err := trackHandler(d.File(), trackArgs, rejects)
		if err != nil {
			return d.Errf("passthrough %s: %v", name, err)
		}
		e.track = track
	}
	p.entries = append(p.entries, e)
	return nil
}

// trackHandler builds the stick module's layer4 track handler from the
// route's track and reject lines, with the stick module's own parser, so
// the grammar stays the stick module's.
func trackHandler(file string, args []string, rejects [][]string) (json.RawMessage, error) {
	var b strings.Builder
	b.WriteString("track")
	for _, a := range args {
		b.WriteString(" " + quote(a))
	}
	if len(rejects) > 0 {
		b.WriteString(" {\n")
		for _, r := range rejects {
			b.WriteString("reject")
			for _, a := range r {
				b.WriteString(" " + quote(a))
			}
			b.WriteString("\n")
		}
		b.WriteString("}")
	}
	tokens, err := caddyfile.Tokenize([]byte(b.String()), file)
	if err != nil {
		return nil, err
	}
	if _, err := caddy.GetModule("layer4.handlers.track"); err != nil {
		return nil, fmt.Errorf("track needs the stick module (layer4.handlers.track), which is not in this build")
	}
	disp := caddyfile.NewDispenser(tokens)
	disp.Next() // UnmarshalModule reads the segment from the current token
	unm, err := caddyfile.UnmarshalModule(disp, "layer4.handlers.track")
	if err != nil {
		return nil, err
	}
	return caddyconfig.JSONModuleObject(unm, "handler", "track", nil), nil
}

// quote writes a token so that the Caddyfile lexer reads it back as is.
func quote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n\"\\`") {
		return s
	}
	return strconv.Quote(s)
}

// finish turns the entries into the wrapper's layer4 routes.
func (p *routeParser) finish(d *caddyfile.Dispenser, lw *ListenerWrapper) error {
	if len(p.entries) == 0 {
		return d.Errf("passthrough: no names (want `<name> <upstream...>` lines)")
	}
	ordered := slices.Clone(p.entries)
	slices.SortStableFunc(ordered, func(a, b routeEntry) int {
		return rank(a) - rank(b)
	})
	if p.nonTLS == "close" {
		notTLS, _ := json.Marshal([]map[string]any{{"tls": map[string]any{}}})
		lw.Routes = append(lw.Routes, &layer4.Route{
			MatcherSetsRaw: []caddy.ModuleMap{{"not": notTLS}},
			HandlersRaw:    []json.RawMessage{json.RawMessage(`{"handler":"close"}`)},
		})
	}
	for _, e := range ordered {
		var tlsMatch any
		switch {
		case e.isDef:
			tlsMatch = map[string]any{}
		case e.pattern.Kind == engine.Regexp:
			tlsMatch = map[string]any{"sni_regexp": map[string]string{"pattern": e.pattern.Value}}
		default:
			tlsMatch = map[string]any{"sni": []string{e.pattern.Value}}
		}
		route := &layer4.Route{MatcherSetsRaw: []caddy.ModuleMap{{"tls": caddyconfig.JSON(tlsMatch, nil)}}}
		if e.track != nil {
			route.HandlersRaw = append(route.HandlersRaw, e.track)
		}
		h := e.handler
		route.HandlersRaw = append(route.HandlersRaw, caddyconfig.JSONModuleObject(&h, "handler", "passthrough", nil))
		lw.Routes = append(lw.Routes, route)
	}
	return nil
}

// rank orders entries: by pattern specificity, default last.
func rank(e routeEntry) int {
	if e.isDef {
		return 1 << 20
	}
	return e.pattern.Specificity()
}

func durationArg(d *caddyfile.Dispenser, where string) (time.Duration, error) {
	if !d.NextArg() {
		return 0, d.Errf("%s: missing duration", where)
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil || dur < 0 {
		return 0, d.Errf("%s: invalid duration %q", where, d.Val())
	}
	if d.NextArg() {
		return 0, d.Errf("%s: unexpected %q", where, d.Val())
	}
	return dur, nil
}

func intArg(d *caddyfile.Dispenser, where string) (int, error) {
	if !d.NextArg() {
		return 0, d.Errf("%s: missing number", where)
	}
	n, err := strconv.Atoi(d.Val())
	if err != nil || n < 0 {
		return 0, d.Errf("%s: %q is not a non-negative number", where, d.Val())
	}
	if d.NextArg() {
		return 0, d.Errf("%s: unexpected %q", where, d.Val())
	}
	return n, nil
}

// checkUpstream accepts host:port with a numeric port; placeholders are
// left for Caddy to resolve.
func checkUpstream(u string) error {
	if strings.Contains(u, "{") {
		return nil
	}
	na, err := caddy.ParseNetworkAddress(u)
	if err != nil {
		return err
	}
	if na.Network != "tcp" || na.Host == "" || na.StartPort == 0 || na.PortRangeSize() != 1 {
		return fmt.Errorf("want host:port")
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*ListenerWrapper)(nil)
)
