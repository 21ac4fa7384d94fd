package passthrough

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/mholt/caddy-l4/layer4"
	"github.com/mholt/caddy-l4/modules/l4close"
	"github.com/mholt/caddy-l4/modules/l4tls"

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
				raw, err := json.Marshal(w)
				if err == nil {
					raw, err = withModuleName(raw, "wrapper", w.(caddy.Module).CaddyModule().ID.Name())
				}
				if err != nil {
					return d.Errf("passthrough listener_wrappers %s: %v", name, err)
				}
				a.ListenerWrappersRaw = append(a.ListenerWrappersRaw, raw)
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
	raw, err := json.Marshal(lw)
	if err == nil {
		raw, err = withModuleName(raw, "wrapper", "passthrough")
	}
	if err != nil {
		return d.Errf("passthrough: %v", err)
	}
	a.ListenerWrappersRaw = append(a.ListenerWrappersRaw, raw)
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
//			track <table> [<key>] [{
//				reject <condition>
//			}]
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
}

// routeParser accumulates the name lines of a passthrough block.
type routeParser struct {
	entries []routeEntry
	nonTLS  string
	seen    map[string]bool
}

// newRouteParser starts a block: connections that are not TLS are closed
// unless `non_tls pass`.
func newRouteParser() *routeParser {
	return &routeParser{nonTLS: "close", seen: map[string]bool{}}
}

// line parses one line of the block (an option or a name line). Each value
// is checked by the handler's own rule (the one Provision applies to JSON
// configs) as soon as it is read, so that the error names its line.
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
	var e routeEntry
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
	h := &e.handler
	for d.NextArg() {
		if err := checkUpstream(d.Val()); err != nil {
			return d.Errf("passthrough %s: %v", name, err)
		}
		h.Upstreams = append(h.Upstreams, d.Val())
	}
	if len(h.Upstreams) == 0 {
		return d.Errf("passthrough %s: missing upstream addresses (host:port)", name)
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := e.option(d, name); err != nil {
			return err
		}
	}
	p.entries = append(p.entries, e)
	return nil
}

// option parses one option line of a name's block.
func (e *routeEntry) option(d *caddyfile.Dispenser, name string) error {
	opt := d.Val()
	where := "passthrough " + name + " " + opt
	h := &e.handler
	var err error // a rule of the handler the value breaks
	switch opt {
	case "lb_policy":
		if !d.NextArg() || d.NextArg() {
			return d.Errf("%s: want one policy name", where)
		}
		h.LBPolicy = d.Val()
		_, err = engine.ParsePolicy(h.LBPolicy)
	case "health_interval", "health_timeout":
		dur, derr := durationArg(d, where)
		if derr != nil {
			return derr
		}
		if h.HealthChecks == nil {
			h.HealthChecks = new(HealthChecks)
		}
		if opt == "health_interval" {
			h.HealthChecks.Interval = caddy.Duration(dur)
		} else {
			h.HealthChecks.Timeout = caddy.Duration(dur)
		}
		err = h.HealthChecks.check()
	case "health_passes", "health_fails", "health_port":
		n, nerr := intArg(d, where)
		if nerr != nil {
			return nerr
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
			h.HealthChecks.Port = n
		}
		err = h.HealthChecks.check()
	case "proxy_protocol":
		if !d.NextArg() {
			return d.Errf("%s: missing version (v2)", where)
		}
		h.ProxyProtocol = d.Val()
		h.ProxyTLVs = d.RemainingArgs()
		if err = checkProxyProtocol(h.ProxyProtocol); err == nil {
			_, _, err = parseTLVs(h.ProxyTLVs)
		}
	case "idle_timeout", "dial_timeout":
		dur, derr := durationArg(d, where)
		if derr != nil {
			return derr
		}
		if opt == "idle_timeout" {
			h.IdleTimeout = caddy.Duration(dur)
		} else {
			h.DialTimeout = caddy.Duration(dur)
		}
		err = checkDuration(opt, caddy.Duration(dur))
	case "name":
		if !d.NextArg() || d.NextArg() {
			return d.Errf("%s: want one route name", where)
		}
		h.Route = d.Val()
	case "track":
		return e.parseTrack(d, name)
	case "reject":
		return d.Errf("%s: reject goes in the track line's block: `track <table> [<key>] { reject <condition> }`", where)
	default:
		return d.Errf("passthrough %s: unknown option %q", name, opt)
	}
	if err != nil {
		return d.Errf("passthrough %s: %v", name, err)
	}
	return nil
}

// parseTrack hands `track <table> [<key>] [{ reject <condition> ... }]` to
// the stick module's layer4 track handler, on the live dispenser: the
// grammar and its errors are the stick module's, at the user's lines.
func (e *routeEntry) parseTrack(d *caddyfile.Dispenser, name string) error {
	if e.track != nil {
		return d.Errf("passthrough %s: track given twice", name)
	}
	const id = "layer4.handlers.track"
	if _, err := caddy.GetModule(id); err != nil {
		return d.Errf("passthrough %s track: needs the stick module (%s), which is not in this build", name, id)
	}
	unm, err := caddyfile.UnmarshalModule(d, id)
	if err != nil {
		return fmt.Errorf("passthrough %s: %w", name, err)
	}
	raw, err := json.Marshal(unm)
	if err != nil {
		return d.Errf("passthrough %s track: %v", name, err)
	}
	e.track, err = withModuleName(raw, "handler", "track")
	if err != nil {
		return d.Errf("passthrough %s track: %v", name, err)
	}
	return nil
}

// finish turns the entries into the wrapper's layer4 routes: exact names
// first, then wildcards (longest first), then regular expressions in the
// order written, then default; then, unless `non_tls pass`, a route that
// closes connections that are not TLS.
func (p *routeParser) finish(d *caddyfile.Dispenser, lw *ListenerWrapper) error {
	if len(p.entries) == 0 {
		return d.Errf("passthrough: no names (want `<name> <upstream...>` lines)")
	}
	ordered := slices.Clone(p.entries)
	slices.SortStableFunc(ordered, func(a, b routeEntry) int {
		return rank(a) - rank(b)
	})
	for _, e := range ordered {
		route, err := e.route()
		if err != nil {
			return d.Errf("passthrough %s: %v", e.handler.Route, err)
		}
		lw.Routes = append(lw.Routes, route)
	}
	if p.nonTLS == "close" {
		// last: a passthrough name is matched with one reading of its
		// ClientHello; a connection that is not TLS fails every tls
		// matcher at its first byte and is closed here
		route, err := nonTLSRoute()
		if err != nil {
			return d.Errf("passthrough: %v", err)
		}
		lw.Routes = append(lw.Routes, route)
	}
	return nil
}

// route is the layer4 route of an entry: caddy-l4's tls matcher with the
// server name matcher of its pattern, then the track handler, then the
// passthrough handler.
func (e *routeEntry) route() (*layer4.Route, error) {
	handshake := caddy.ModuleMap{}
	var err error
	switch {
	case e.isDef:
	case e.pattern.Kind == engine.Regexp:
		handshake["sni_regexp"], err = json.Marshal(caddytls.MatchServerNameRE{MatchRegexp: caddytls.MatchRegexp{Pattern: e.pattern.Value}})
	default:
		handshake["sni"], err = json.Marshal(caddytls.MatchServerName{e.pattern.Value})
	}
	if err != nil {
		return nil, err
	}
	tlsMatch, err := json.Marshal(&l4tls.MatchTLS{MatchersRaw: handshake})
	if err != nil {
		return nil, err
	}
	route := &layer4.Route{MatcherSetsRaw: []caddy.ModuleMap{{"tls": tlsMatch}}}
	if e.track != nil {
		route.HandlersRaw = append(route.HandlersRaw, e.track)
	}
	h := e.handler
	handler, err := json.Marshal(&h)
	if err != nil {
		return nil, err
	}
	if handler, err = withModuleName(handler, "handler", "passthrough"); err != nil {
		return nil, err
	}
	route.HandlersRaw = append(route.HandlersRaw, handler)
	return route, nil
}

// nonTLSRoute closes connections that do not start with a TLS handshake.
func nonTLSRoute() (*layer4.Route, error) {
	tlsMatch, err := json.Marshal(&l4tls.MatchTLS{MatchersRaw: caddy.ModuleMap{}})
	if err != nil {
		return nil, err
	}
	notTLS, err := json.Marshal(&layer4.MatchNot{MatcherSetsRaw: []caddy.ModuleMap{{"tls": tlsMatch}}})
	if err != nil {
		return nil, err
	}
	closeHandler, err := json.Marshal(&l4close.HandleClose{})
	if err == nil {
		closeHandler, err = withModuleName(closeHandler, "handler", "close")
	}
	if err != nil {
		return nil, err
	}
	return &layer4.Route{
		MatcherSetsRaw: []caddy.ModuleMap{{"not": notTLS}},
		HandlersRaw:    []json.RawMessage{closeHandler},
	}, nil
}

// withModuleName adds the inline module key to a module's JSON object, as
// caddyconfig.JSONModuleObject does, with the error returned rather than
// turned into a warning nobody reads.
func withModuleName(obj []byte, key, name string) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, err
	}
	if m == nil {
		m = map[string]json.RawMessage{}
	}
	nameJSON, err := json.Marshal(name)
	if err != nil {
		return nil, err
	}
	m[key] = nameJSON
	return json.Marshal(m)
}

// rank orders entries: by pattern specificity, default last.
func rank(e routeEntry) int {
	if e.isDef {
		return 1 << 20
	}
	return e.pattern.Specificity()
}

// durationArg reads the one duration argument of an option.
func durationArg(d *caddyfile.Dispenser, where string) (time.Duration, error) {
	if !d.NextArg() {
		return 0, d.Errf("%s: missing duration", where)
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil {
		return 0, d.Errf("%s: invalid duration %q", where, d.Val())
	}
	if d.NextArg() {
		return 0, d.Errf("%s: unexpected %q", where, d.Val())
	}
	return dur, nil
}

// intArg reads the one integer argument of an option.
func intArg(d *caddyfile.Dispenser, where string) (int, error) {
	if !d.NextArg() {
		return 0, d.Errf("%s: missing number", where)
	}
	n, err := strconv.Atoi(d.Val())
	if err != nil {
		return 0, d.Errf("%s: %q is not a number", where, d.Val())
	}
	if d.NextArg() {
		return 0, d.Errf("%s: unexpected %q", where, d.Val())
	}
	return n, nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*ListenerWrapper)(nil)
)
