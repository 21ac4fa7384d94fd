package hideorigin

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// siblingUpstreams finds the upstreams of the reverse_proxy handlers that sit
// next to this hide_origin handler, at provision time.
//
// A handler cannot see its route directly, but Caddy's context keeps the
// lineage of modules being provisioned (ctx.Modules()). The nearest
// enclosing module is either a subroute (the Caddyfile wraps each site block
// and each handle block in one) or the http app itself. Route lists are
// provisioned in order and the handler JSON of the routes that are not yet
// provisioned is still in place, so every sibling is readable: provisioned
// reverse_proxy handlers through their Upstreams field, the rest from their
// JSON. Nested subroutes (handle, handle_path, route blocks) are searched
// too. In the app case (hide_origin directly in a server's route list, as in
// hand-written JSON) the servers whose routes hold a hide_origin handler are
// searched.
func siblingUpstreams(ctx caddy.Context, repl *caddy.Replacer) []string {
	mods := ctx.Modules()
	var dials []string
	for i := len(mods) - 2; i >= 0; i-- {
		switch parent := mods[i].(type) {
		case *caddyhttp.Subroute:
			dials = routeUpstreams(parent.Routes)
		case *caddyhttp.App:
			for _, srv := range parent.Servers {
				if routesMentionHideOrigin(srv.Routes) {
					dials = append(dials, routeUpstreams(srv.Routes)...)
				}
			}
		default:
			continue
		}
		break
	}
	var out []string
	for _, d := range dials {
		if id, ok := dialIdentity(repl.ReplaceKnown(d, "")); ok {
			out = append(out, id)
		}
	}
	return out
}

// dialIdentity turns a reverse_proxy dial address into an identity, or
// reports false for unix sockets and addresses that are still placeholders
// (those are learned when they answer).
func dialIdentity(dial string) (string, bool) {
	if strings.Contains(dial, "{") || dial == "" {
		return "", false
	}
	if network, addr, ok := strings.Cut(dial, "/"); ok && !strings.Contains(network, ":") {
		if strings.HasPrefix(network, "unix") {
			return "", false
		}
		dial = addr
	}
	return dial, true
}

func routesMentionHideOrigin(routes caddyhttp.RouteList) bool {
	for _, r := range routes {
		for _, raw := range r.HandlersRaw {
			if bytes.Contains(raw, []byte(`"hide_origin"`)) {
				return true
			}
		}
	}
	return false
}

func routeUpstreams(routes caddyhttp.RouteList) []string {
	var out []string
	for _, r := range routes {
		for _, hd := range r.Handlers {
			switch v := hd.(type) {
			case *reverseproxy.Handler:
				for _, u := range v.Upstreams {
					out = append(out, u.Dial)
				}
			case *caddyhttp.Subroute:
				out = append(out, routeUpstreams(v.Routes)...)
			}
		}
		for _, raw := range r.HandlersRaw {
			var v any
			if json.Unmarshal(raw, &v) == nil {
				out = append(out, jsonUpstreams(v)...)
			}
		}
	}
	return out
}

// jsonUpstreams walks handler JSON for reverse_proxy upstream dials.
func jsonUpstreams(v any) []string {
	var out []string
	switch t := v.(type) {
	case map[string]any:
		if t["handler"] == "reverse_proxy" {
			if ups, ok := t["upstreams"].([]any); ok {
				for _, u := range ups {
					if um, ok := u.(map[string]any); ok {
						if d, ok := um["dial"].(string); ok {
							out = append(out, d)
						}
					}
				}
			}
		}
		for _, child := range t {
			out = append(out, jsonUpstreams(child)...)
		}
	case []any:
		for _, child := range t {
			out = append(out, jsonUpstreams(child)...)
		}
	}
	return out
}
