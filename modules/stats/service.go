package stats

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	rmetrics "github.com/rampart-edge/caddy-rampart/internal/metrics"
	"github.com/rampart-edge/caddy-rampart/modules/stats/upstate"
)

//go:embed page.html
var pageFS embed.FS

var pageTemplate = template.Must(template.ParseFS(pageFS, "page.html"))

// token guards the page's state changes on a site (the rampart_stats
// handler with `admin`): the page sends it in the X-Rampart-Token header,
// which a cross-site form cannot set and a cross-site script cannot send
// without a CORS preflight no Rampart route answers. It lasts as long as
// the process, so open pages keep working across reloads.
var token = func() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}()

// maxBody bounds a PUT body.
const maxBody = 4 << 10

// service is what the admin routes and the handler share: one config's
// snapshot source and logger.
type service struct {
	src    source
	logger *zap.Logger
}

// newService sets up the service of a config: its metrics registry, its
// stick-table API (reached by module name) and the collectors.
func newService(ctx caddy.Context) (*service, error) {
	if err := rmetrics.Register(ctx, metricRequests, metricResponses, metricLatency, metricStateChanges, registryCollector{}); err != nil {
		return nil, err
	}
	s := &service{src: source{registry: ctx.GetMetricsRegistry(), loaded: time.Now().UTC()}, logger: ctx.Logger()}
	if _, err := ctx.AppIfConfigured("stick_tables"); err == nil {
		if mod, err := caddy.GetModule("admin.api.stick_tables"); err == nil {
			inst := mod.New()
			if p, ok := inst.(caddy.Provisioner); ok {
				if err := p.Provision(ctx); err != nil {
					return nil, err
				}
			}
			if router, ok := inst.(caddy.AdminRouter); ok {
				for _, rt := range router.Routes() {
					if rt.Pattern == "/stick-tables/" {
						s.src.stick = rt.Handler
					}
				}
			}
		}
	}
	return s, nil
}

// urls are where a page finds its data and sends its changes.
type urls struct {
	JSON, CSV, Upstreams, Stick string
}

// apiError is a 4xx (or 5xx) JSON error; the admin API writes it as
// {"error": "..."}, and the handler writes it the same way.
func apiError(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

// page renders the HTML page.
func (s *service) page(w http.ResponseWriter, r *http.Request, u urls, admin bool) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return apiError(http.StatusMethodNotAllowed, "method %s not allowed on the stats page (use GET)", r.Method)
	}
	data := struct {
		URLs  urls
		Admin bool
		Token string
	}{u, admin, ""}
	if admin {
		data.Token = token
	}
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, data); err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	_, err := w.Write(buf.Bytes())
	return err
}

// json writes the snapshot as JSON.
func (s *service) json(w http.ResponseWriter, r *http.Request, admin bool) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return apiError(http.StatusMethodNotAllowed, "method %s not allowed on stats.json (use GET)", r.Method)
	}
	return writeJSON(w, http.StatusOK, s.src.take(admin))
}

// csv writes the snapshot as CSV.
func (s *service) csv(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return apiError(http.StatusMethodNotAllowed, "method %s not allowed on stats.csv (use GET)", r.Method)
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	return writeCSV(w, s.src.take(false))
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// stateRequest is the body of PUT /rampart/upstreams/<upstream>.
type stateRequest struct {
	// State is ready, drain or maint.
	State *string `json:"state"`
	// KeepSticky, with drain, still sends the upstream the requests its
	// handler's lb_policy binds to it (cookie, stick).
	KeepSticky bool `json:"keep_sticky"`
}

// upstreams serves /rampart/upstreams/<upstream> (rest is what follows
// the prefix): GET lists the rows of every upstream (or of one address);
// PUT {"state": "ready"|"drain"|"maint", "keep_sticky": bool} changes an
// address's state, when admin. rest is the decoded path after the prefix; who names the client
// for the log and the page.
func (s *service) upstreams(w http.ResponseWriter, r *http.Request, rest string, admin bool, who string) error {
	addr := rest
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		rows := []UpstreamRow{}
		for _, row := range upstreamRows() {
			if addr == "" || row.Address == addr {
				rows = append(rows, row)
			}
		}
		if addr != "" && len(rows) == 0 {
			return apiError(http.StatusNotFound, "no running config has an upstream %q", addr)
		}
		return writeJSON(w, http.StatusOK, rows)
	case http.MethodPut:
	default:
		return apiError(http.StatusMethodNotAllowed, "method %s not allowed on an upstream (use GET or PUT)", r.Method)
	}
	if !admin {
		return apiError(http.StatusForbidden, "this stats page is read-only (the rampart_stats handler needs `admin` to change states)")
	}
	if addr == "" {
		return apiError(http.StatusBadRequest, "PUT needs an upstream: /upstreams/<address>")
	}
	if !upstate.Known(addr) {
		return apiError(http.StatusNotFound, "no running config has an upstream %q (use the dial address the page lists)", addr)
	}
	var req stateRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return apiError(http.StatusBadRequest, "body must be a JSON object {\"state\": \"ready\"|\"drain\"|\"maint\", \"keep_sticky\": true|false}: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return apiError(http.StatusBadRequest, "body must hold one JSON object")
	}
	if req.State == nil {
		return apiError(http.StatusBadRequest, "body needs \"state\": \"ready\", \"drain\" or \"maint\"")
	}
	state, err := upstate.Parse(*req.State)
	if err != nil {
		return apiError(http.StatusBadRequest, "upstream %s: %v", addr, err)
	}
	if req.KeepSticky && state != upstate.Drain {
		return apiError(http.StatusBadRequest, "upstream %s: keep_sticky applies to drain only, not %s", addr, state)
	}
	old := upstate.Set(addr, state, req.KeepSticky, who)
	metricStateChanges.WithLabelValues(state.String()).Inc()
	s.logger.Info("upstream state changed", zap.String("upstream", addr),
		zap.String("from", old.String()), zap.String("to", state.String()), zap.Bool("keep_sticky", req.KeepSticky), zap.String("by", who))
	rows := []UpstreamRow{}
	for _, row := range upstreamRows() {
		if row.Address == addr {
			rows = append(rows, row)
		}
	}
	return writeJSON(w, http.StatusOK, rows)
}

// stick forwards a stick-table action (DELETE an entry, PUT values such as
// {"ban": "10m"}) to the config's stick-table API; rest is
// <table>/<key>. Only admin pages may.
func (s *service) stick(w http.ResponseWriter, r *http.Request, rest string, admin bool, who string) error {
	if !admin {
		return apiError(http.StatusForbidden, "this stats page is read-only (the rampart_stats handler needs `admin` to change tables)")
	}
	if s.src.stick == nil {
		return apiError(http.StatusNotFound, "no stick tables are configured")
	}
	if r.Method != http.MethodDelete && r.Method != http.MethodPut {
		return apiError(http.StatusMethodNotAllowed, "method %s not allowed on a stick-table entry (use DELETE or PUT)", r.Method)
	}
	if !strings.Contains(rest, "/") {
		return apiError(http.StatusBadRequest, "want /stick-tables/<table>/<key>")
	}
	fwd := r.Clone(r.Context())
	fwd.URL = &url.URL{Path: "/stick-tables/" + rest}
	fwd.RequestURI = ""
	if err := s.src.stick.ServeHTTP(w, fwd); err != nil {
		return err
	}
	s.logger.Info("stick table changed", zap.String("method", r.Method), zap.String("entry", rest), zap.String("by", who))
	return nil
}
