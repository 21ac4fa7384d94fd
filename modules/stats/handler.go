package stats

import (
	"errors"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler (http.handlers.rampart_stats) serves the stats page on a site,
// so that it can sit behind basic_auth and TLS on a public edge. It answers
// every request it gets (it is terminal), by the request path P:
//
//	P                               the page
//	P ending in .json / .csv        the snapshot as JSON / CSV
//	.../upstreams/<upstream>        upstream rows; PUT changes a state (admin only)
//	.../stick-tables/<table>/<key>  DELETE or PUT an entry (admin only)
//
// The page at /stats finds its data at /stats.json and sends its changes to
// /stats/upstreams/...; a route such as `handle /stats*` covers them all.
// State changes on a site need `admin` and the page's token in the
// X-Rampart-Token header (CSRF-safe: a cross-site form cannot set it).
type Handler struct {
	// Admin lets the page (and PUT/DELETE requests with the token) change
	// upstream states and stick-table entries. Default: read-only.
	Admin bool `json:"admin,omitempty"`

	svc *service
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.rampart_stats", New: func() caddy.Module { return new(Handler) }}
}

// Provision sets up the page's sources.
func (h *Handler) Provision(ctx caddy.Context) error {
	svc, err := newService(ctx)
	if err != nil {
		return err
	}
	h.svc = svc
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler; it never calls next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	err := h.serve(w, r)
	var apiErr caddy.APIError
	if errors.As(err, &apiErr) {
		return writeJSON(w, apiErr.HTTPStatus, map[string]string{"error": apiErr.Err.Error()})
	}
	return err
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) error {
	p := r.URL.Path
	if _, rest, ok := strings.Cut(p, "/upstreams/"); ok {
		if err := h.check(r); err != nil {
			return err
		}
		return h.svc.upstreams(w, r, rest, h.Admin, who(r))
	}
	if _, rest, ok := strings.Cut(p, "/stick-tables/"); ok {
		if err := h.check(r); err != nil {
			return err
		}
		return h.svc.stick(w, r, rest, h.Admin, who(r))
	}
	switch {
	case strings.HasSuffix(p, ".json"):
		return h.svc.json(w, r, h.Admin)
	case strings.HasSuffix(p, ".csv"):
		return h.svc.csv(w, r)
	}
	base := strings.TrimSuffix(p, "/")
	return h.svc.page(w, r, urls{JSON: base + ".json", CSV: base + ".csv", Upstreams: base + "/upstreams/", Stick: base + "/stick-tables/"}, h.Admin)
}

// check refuses a state change without the page's token.
func (h *Handler) check(r *http.Request) error {
	if r.Method == http.MethodGet || r.Method == http.MethodHead || !h.Admin {
		return nil // reads, and the read-only refusal, need no token
	}
	if r.Header.Get("X-Rampart-Token") != token {
		return apiError(http.StatusForbidden, "a state change needs the stats page's X-Rampart-Token header (open the page and use its buttons)")
	}
	return nil
}

// who names the client of a state change: its address and, behind
// basic_auth, its user.
func who(r *http.Request) string {
	s := r.RemoteAddr
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		if user := repl.ReplaceAll("{http.auth.user.id}", ""); user != "" {
			s = user + "@" + s
		}
	}
	return s
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	rampart_stats [admin]
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	for d.NextArg() {
		if d.Val() != "admin" {
			return d.Errf("rampart_stats: unknown argument %q (the only one is admin)", d.Val())
		}
		h.Admin = true
	}
	for d.NextBlock(0) {
		return d.Errf("rampart_stats: takes no block (found %q); use `rampart_stats admin`", d.Val())
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
