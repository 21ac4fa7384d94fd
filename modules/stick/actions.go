package stick

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rampart-edge/caddy-rampart/modules/stick/table"
)

func init() {
	caddy.RegisterModule(Tarpit{})
	caddy.RegisterModule(Inc{})
	caddy.RegisterModule(Set{})
	caddy.RegisterModule(Ban{})
}

// Tarpit (`tarpit [<matcher>] <delay> [<status>]`) holds the request for the
// delay, then ends it with an error of the status (429 by default; HAProxy's
// default is 500) and a Retry-After header of the delay in whole seconds,
// without running the rest of the route. Being an error, the answer goes
// through the site's handle_errors, which can render its own page. A
// client that goes away during the delay frees the request at once.
// Tarpitted requests count as http_err in every table tracked by the
// request (as in HAProxy) and in rampart_stick_rejections_total{layer="http"}.
type Tarpit struct {
	// How long to hold the request.
	Delay caddy.Duration `json:"delay"`
	// The response status: a 4xx or 5xx code (default 429).
	StatusCode int `json:"status_code,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Tarpit) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.tarpit", New: func() caddy.Module { return new(Tarpit) }}
}

// Validate checks the delay and status.
func (h *Tarpit) Validate() error {
	if h.Delay < 0 {
		return fmt.Errorf("tarpit: delay %s must not be negative", time.Duration(h.Delay))
	}
	if h.StatusCode != 0 && (h.StatusCode < 400 || h.StatusCode > 599) {
		return fmt.Errorf("tarpit: status %d is not a 4xx or 5xx code", h.StatusCode)
	}
	return nil
}

// errTarpitted is the error a tarpitted request ends with.
var errTarpitted = errors.New("request tarpitted by a stick table rule")

// ServeHTTP holds the request, then returns the tarpit's error.
func (h *Tarpit) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	for _, tr := range stateOrNil(r) {
		rejections.WithLabelValues(tr.name, layerHTTP).Inc()
	}
	status := h.StatusCode
	if status == 0 {
		status = http.StatusTooManyRequests
	}
	if d := time.Duration(h.Delay); d > 0 {
		timer := time.NewTimer(d)
		select {
		case <-timer.C:
		case <-r.Context().Done():
			timer.Stop()
			return caddyhttp.Error(status, errTarpitted)
		}
	}
	secs := (time.Duration(h.Delay) + time.Second - 1) / time.Second
	w.Header().Set("Retry-After", strconv.Itoa(max(int(secs), 1)))
	return caddyhttp.Error(status, errTarpitted)
}

func stateOrNil(r *http.Request) []tracked {
	if st := stateOf(r); st != nil {
		return st.tracked
	}
	return nil
}

// Inc (`stick_inc [<matcher>] <table> <data> [<n>] [key <expr>]`) adds
// n (default 1) to a counter of the entry, as HAProxy's sc-inc-gpc: gpc<N>
// also advances gpc<N>_rate when the table stores it. Any counter or rate
// may be named.
type Inc struct {
	target
	// The value to increment: gpc0, gpc1, ... (or any counter or rate).
	Data string `json:"data"`
	// How much to add (default 1).
	Count uint64 `json:"count,omitempty"`

	col table.Column
}

// CaddyModule returns the Caddy module information.
func (Inc) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.stick_inc", New: func() caddy.Module { return new(Inc) }}
}

// Provision resolves the table and value.
func (h *Inc) Provision(ctx caddy.Context) error {
	col, err := h.provisionColumn(ctx, "stick_inc", h.Data)
	if err != nil {
		return err
	}
	h.col = col
	return nil
}

// ServeHTTP increments and continues.
func (h *Inc) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	n := h.Count
	if n == 0 {
		n = 1
	}
	h.with(r, func(ref table.Ref) { h.tbl.Add(ref, h.col, n) })
	return next.ServeHTTP(w, r)
}

// Set (`stick_set [<matcher>] <table> <data> <value> [key <expr>]`)
// stores a value in the entry, as HAProxy's sc-set-gpt: gpt<N> usually, but
// any stored value may be set. The value may be a placeholder expression
// that evaluates to a non-negative integer.
type Set struct {
	target
	// The value to set: gpt0, gpt1, ... (or any stored value).
	Data string `json:"data"`
	// The new value: an integer or a placeholder expression.
	Value string `json:"value"`

	col table.Column
}

// CaddyModule returns the Caddy module information.
func (Set) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.stick_set", New: func() caddy.Module { return new(Set) }}
}

// Provision resolves the table and value.
func (h *Set) Provision(ctx caddy.Context) error {
	col, err := h.provisionColumn(ctx, "stick_set", h.Data)
	if err != nil {
		return err
	}
	h.col = col
	if h.Value == "" {
		return fmt.Errorf("stick_set %s %s: missing value", h.Table, h.Data)
	}
	return nil
}

// ServeHTTP sets the value and continues; a value that does not evaluate
// to an integer is skipped.
func (h *Set) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	text := h.Value
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		text = repl.ReplaceAll(h.Value, "")
	}
	if v, err := strconv.ParseUint(text, 10, 64); err == nil {
		h.set(r, h.col, v)
	}
	return next.ServeHTTP(w, r)
}

// Ban (`stick_ban [<matcher>] <table> <duration> [key <expr>]`) bans the
// entry's key for the duration: `stick <table> banned` matches, the listener
// wrapper and layer4 handler refuse its connections with `reject banned`.
// The table must store ban.
type Ban struct {
	target
	// How long the ban lasts.
	Duration caddy.Duration `json:"duration"`

	col table.Column
}

// CaddyModule returns the Caddy module information.
func (Ban) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.stick_ban", New: func() caddy.Module { return new(Ban) }}
}

// Provision resolves the table.
func (h *Ban) Provision(ctx caddy.Context) error {
	if err := h.provision(ctx, "stick_ban"); err != nil {
		return err
	}
	col, ok := h.tbl.BanColumn()
	if !ok {
		return fmt.Errorf("stick_ban %s: the table does not store ban (add ban to its store list)", h.Table)
	}
	h.col = col
	return nil
}

// Validate checks the duration.
func (h *Ban) Validate() error {
	if h.Duration <= 0 {
		return fmt.Errorf("stick_ban %s: duration %s must be positive", h.Table, time.Duration(h.Duration))
	}
	return nil
}

// ServeHTTP bans and continues.
func (h *Ban) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	ms := uint64(time.Duration(h.Duration).Milliseconds())
	h.set(r, h.col, ms)
	return next.ServeHTTP(w, r)
}

var (
	_ caddyhttp.MiddlewareHandler = (*Tarpit)(nil)
	_ caddyhttp.MiddlewareHandler = (*Inc)(nil)
	_ caddyhttp.MiddlewareHandler = (*Set)(nil)
	_ caddyhttp.MiddlewareHandler = (*Ban)(nil)
	_ caddy.Validator             = (*Tarpit)(nil)
	_ caddy.Validator             = (*Ban)(nil)
)
