package stats

import (
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(new(AdminAPI))
}

// AdminAPI (admin.api.rampart_stats) serves the stats page and runtime
// control on Caddy's admin endpoint:
//
//	GET /rampart/stats                  the page (HTML, refreshes itself)
//	GET /rampart/stats.json             the snapshot (Snapshot)
//	GET /rampart/stats.csv              one row per object (csvColumns)
//	GET /rampart/upstreams/[<upstream>] upstream rows
//	PUT /rampart/upstreams/<upstream>   {"state": "ready"|"drain"|"maint", "keep_sticky": false}
//	DELETE|PUT /rampart/stick-tables/<table>/<key>   stick-table actions
//
// When a config loads, the module also wraps the selection policy of each
// of its reverse_proxy handlers (in Provision, which Caddy runs before it
// starts the config's servers), so that drain and maint take effect and
// the rampart_upstream_* figures are counted. It has no configuration.
type AdminAPI struct {
	svc *service
}

// CaddyModule returns the Caddy module information.
func (*AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "admin.api.rampart_stats", New: func() caddy.Module { return new(AdminAPI) }}
}

// Provision instruments the config's reverse_proxy handlers and sets up
// the page's sources.
func (a *AdminAPI) Provision(ctx caddy.Context) error {
	svc, err := newService(ctx)
	if err != nil {
		return err
	}
	a.svc = svc
	return instrument(ctx, svc.src.stick)
}

// adminURLs are the page's URLs on the admin endpoint.
var adminURLs = urls{JSON: "/rampart/stats.json", CSV: "/rampart/stats.csv", Upstreams: "/rampart/upstreams/", Stick: "/rampart/stick-tables/"}

// Routes returns the /rampart/ routes.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/rampart/stats", Handler: caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			return a.svc.page(w, r, adminURLs, true)
		})},
		{Pattern: "/rampart/stats.json", Handler: caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			return a.svc.json(w, r, true)
		})},
		{Pattern: "/rampart/stats.csv", Handler: caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			return a.svc.csv(w, r)
		})},
		{Pattern: "/rampart/upstreams/", Handler: caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			return a.svc.upstreams(w, r, strings.TrimPrefix(r.URL.Path, "/rampart/upstreams/"), true, "admin API "+r.RemoteAddr)
		})},
		{Pattern: "/rampart/stick-tables/", Handler: caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			return a.svc.stick(w, r, strings.TrimPrefix(r.URL.Path, "/rampart/stick-tables/"), true, "admin API "+r.RemoteAddr)
		})},
	}
}

// Interface guards
var (
	_ caddy.Provisioner = (*AdminAPI)(nil)
	_ caddy.AdminRouter = (*AdminAPI)(nil)
)
