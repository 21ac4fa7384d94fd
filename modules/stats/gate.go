package stats

import (
	"fmt"
	"net/http"
	"sort"

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
type gate struct {
	inner reverseproxy.Selector
	// bound reports whether the policy's persistence (a cookie, a
	// stick-table entry) binds the request to an upstream; nil when the
	// policy has none. A drain with keep_sticky still gets bound requests.
	bound func(r *http.Request, u *reverseproxy.Upstream) bool
}

// Select implements reverseproxy.Selector.
func (g *gate) Select(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	if upstate.AnyHeld() {
		usable := make(reverseproxy.UpstreamPool, 0, len(pool))
		for _, u := range pool {
			cell := upstate.For(u.Dial)
			if !cell.Held() {
				usable = append(usable, u)
				continue
			}
			if g.bound != nil && cell.KeepsSticky() && u.Available() && g.bound(r, u) {
				observe(r, u.Dial)
				return u
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

// observe counts an attempt to an upstream and, on the request's first
// attempt, queues the request so that its response is recorded once it
// has ended (see flights). Caddy's placeholders then hold the last
// attempt's status and latency.
func observe(r *http.Request, addr string) {
	fig := figuresFor(addr)
	fig.requests.Inc()
	ctx := r.Context()
	if f, ok := caddyhttp.GetVar(ctx, flightVar).(*flight); ok {
		f.fig.Store(fig)
		return
	}
	repl, _ := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	f := &flight{ctx: ctx, repl: repl}
	f.fig.Store(fig)
	caddyhttp.SetVar(ctx, flightVar, f)
	flights.add(f)
}

// instrument wraps the selection policy of every reverse_proxy handler of
// the config's HTTP app (in routes, subroutes, error routes, named routes
// and handle_response routes) and lists their static upstreams in the
// upstream registry until the config ends. It runs before the config's
// servers start, so nothing reads the policies yet.
// stick is the config's stick-table admin API (nil without stick tables),
// which tells the stick policy's bindings to a drain with keep_sticky.
func instrument(ctx caddy.Context, stick caddy.AdminHandler) error {
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
	w := walker{ctx: ctx, stick: stick, seen: map[*reverseproxy.Handler]bool{}}
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
	stick  caddy.AdminHandler
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
	policy := h.LoadBalancing.SelectionPolicy
	h.LoadBalancing.SelectionPolicy = &gate{inner: policy, bound: boundBy(policy, w.stick)}
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
