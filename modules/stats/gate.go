package stats

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/rampart-edge/caddy-rampart/modules/stats/upstate"
)

// gate wraps a reverse_proxy handler's selection policy: it takes the
// upstreams an operator holds (drain, maint) out of the pool before the
// handler's own policy chooses, and counts the request for the upstream
// chosen. Caddy asks the policy once per attempt, before it dials, so a
// held upstream gets no new request while the requests it is serving
// (already past selection) go on to their end.
//
// This is the one per-request hook of reverse_proxy that Caddy reads from
// the handler goroutine only: the handler's Transport is also read by its
// active health checker's goroutine, so replacing it after provisioning
// would race.
type gate struct{ inner reverseproxy.Selector }

// Select implements reverseproxy.Selector.
func (g *gate) Select(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	if upstate.AnyHeld() {
		usable := make(reverseproxy.UpstreamPool, 0, len(pool))
		for _, u := range pool {
			if !upstate.For(u.Dial).Held() {
				usable = append(usable, u)
			}
		}
		pool = usable
	}
	u := g.inner.Select(pool, r, w)
	if u != nil {
		observe(r, u.Dial)
	}
	return u
}

// flightVar is the request variable holding the request's *flight.
const flightVar = "rampart_stats.flight"

// flight is one proxied request: the upstream of its latest attempt, whose
// response is recorded when the request ends.
type flight struct{ fig atomic.Pointer[figures] }

// observe counts an attempt to an upstream and, on the request's first
// attempt, arranges for its response to be recorded when the request ends
// (the server cancels the request's context when its handler returns).
// Caddy's placeholders then hold the last attempt's status and latency.
func observe(r *http.Request, addr string) {
	fig := figuresFor(addr)
	fig.requests.Inc()
	ctx := r.Context()
	if f, ok := caddyhttp.GetVar(ctx, flightVar).(*flight); ok {
		f.fig.Store(fig)
		return
	}
	f := new(flight)
	f.fig.Store(fig)
	caddyhttp.SetVar(ctx, flightVar, f)
	repl, _ := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	context.AfterFunc(ctx, func() { f.fig.Load().record(repl) })
}

// instrument wraps the selection policy of every reverse_proxy handler of
// the config's HTTP app (in routes, subroutes, error routes, named routes
// and handle_response routes) and lists their static upstreams in the
// upstream registry until the config ends. It runs before the config's
// servers start, so nothing reads the policies yet.
func instrument(ctx caddy.Context) error {
	app, err := ctx.AppIfConfigured("http")
	if err != nil {
		return nil // not configured, or its error is reported when Caddy loads it
	}
	httpApp, ok := app.(*caddyhttp.App)
	if !ok {
		return nil
	}
	names := make([]string, 0, len(httpApp.Servers))
	for name := range httpApp.Servers {
		names = append(names, name)
	}
	sort.Strings(names)
	w := walker{ctx: ctx, seen: map[*reverseproxy.Handler]bool{}}
	for _, name := range names {
		srv := httpApp.Servers[name]
		w.server, w.n = name, 0
		w.routes(srv.Routes)
		if srv.Errors != nil {
			w.routes(srv.Errors.Routes)
		}
		named := make([]string, 0, len(srv.NamedRoutes))
		for n := range srv.NamedRoutes {
			named = append(named, n)
		}
		sort.Strings(named)
		for _, n := range named {
			w.route(*srv.NamedRoutes[n])
		}
	}
	return nil
}

// walker finds the reverse_proxy handlers of one config.
type walker struct {
	ctx    caddy.Context
	server string
	n      int // reverse_proxy handlers found in this server so far
	seen   map[*reverseproxy.Handler]bool
}

func (w *walker) routes(rs caddyhttp.RouteList) {
	for _, r := range rs {
		w.route(r)
	}
}

func (w *walker) route(r caddyhttp.Route) {
	for _, h := range r.Handlers {
		switch h := h.(type) {
		case *caddyhttp.Subroute:
			w.routes(h.Routes)
			if h.Errors != nil {
				w.routes(h.Errors.Routes)
			}
		case *reverseproxy.Handler:
			w.proxy(h)
		}
	}
}

// proxy wraps one handler's policy and joins its upstreams. The group,
// "<server> #<n>", names the handler on the page.
func (w *walker) proxy(h *reverseproxy.Handler) {
	if w.seen[h] || h.LoadBalancing == nil || h.LoadBalancing.SelectionPolicy == nil {
		return
	}
	w.seen[h] = true
	w.n++
	group := fmt.Sprintf("%s #%d", w.server, w.n)
	h.LoadBalancing.SelectionPolicy = &gate{inner: h.LoadBalancing.SelectionPolicy}
	for _, u := range h.Upstreams {
		cell := upstate.For(u.Dial)
		leave := upstate.Join(&upstate.Member{
			Kind: "reverse_proxy", Group: group, Addr: u.Dial,
			Active:  func() int64 { return int64(u.NumRequests()) },
			Healthy: func() bool { return u.Healthy() && cell.State() != upstate.Maint },
		})
		w.ctx.OnCancel(leave)
	}
	for _, rh := range h.HandleResponse {
		w.routes(rh.Routes)
	}
}
