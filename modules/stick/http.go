package stick

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/modules/stick/table"
)

func init() {
	caddy.RegisterModule(Track{})
}

// stateVar is the request variable holding what track did in this request.
const stateVar = "rampart.stick"

// bytesVar is the request variable holding the request's *reqState for
// handlers that move the request's bytes outside its body and
// ResponseWriter (forward_proxy's HTTP/1.1 CONNECT tunnel, which takes over
// the connection): they call its CountBytes(in, out uint64). forward_proxy
// knows the variable by this name and the method by its signature (glue
// packages do not import each other).
const bytesVar = "rampart.count_bytes"

// reqState is the per-request tracking state shared by every track handler,
// the stick matcher, the stick_* actions, the lb policy and the
// placeholders of one request.
type reqState struct {
	w       countingWriter
	body    *countingBody
	tracked []tracked
	first   [2]tracked // backing array: no allocation for up to two tables
}

type tracked struct {
	name string
	tbl  *table.Table
	ref  table.Ref
	key  string
	// view is a strict table's entry as this request counted it (by
	// column): reads see the request's own cluster-wide count, not a later
	// request's. nil for other tables.
	view []uint64
}

// get reads a column of the tracked entry.
func (tr *tracked) get(c table.Column) (uint64, bool) {
	if tr.view != nil {
		if i := tr.tbl.Schema().ColumnIndex(c); i >= 0 {
			return tr.view[i], true
		}
	}
	return tr.tbl.Get(tr.ref, c)
}

// banned reports whether the tracked entry's ban is in force.
func (tr *tracked) banned() bool {
	if c, ok := tr.tbl.BanColumn(); ok && tr.view != nil {
		v, _ := tr.get(c)
		return v > 0
	}
	return tr.tbl.Banned(tr.ref)
}

func stateOf(r *http.Request) *reqState {
	s, _ := caddyhttp.GetVar(r.Context(), stateVar).(*reqState)
	return s
}

// find returns the entry tracked for a table in this request.
func (s *reqState) find(name string) (*tracked, bool) {
	if s == nil {
		return nil, false
	}
	for i := range s.tracked {
		if s.tracked[i].name == name {
			return &s.tracked[i], true
		}
	}
	return nil, false
}

// Track (`track <table> <key>`) counts the request and its response under a
// key of a table: http_req_cnt/rate and req_cur when the request arrives;
// http_err (4xx, including requests denied or tarpitted by Rampart or any
// other handler) or http_fail (5xx except 501 and 505), bytes_in (request
// body) and bytes_out (response body) when it ends. The entry is held (never
// evicted or expired) while the request runs. Several track handlers may
// track several tables in one request; the stick matcher, the stick_*
// actions, the stick lb policy and the {http.stick.<table>.<data>}
// placeholders then use the key tracked for their table.
type Track struct {
	// The table.
	Table string `json:"table"`
	// The key: any placeholder expression, e.g. {client_ip} or
	// {client_ip}{path}. Requests whose key is empty or invalid for the
	// table's type are not tracked (logged at debug level).
	Key string `json:"key"`

	tbl    *table.Table
	live   *liveTable
	logger *zap.Logger
	full   *throttle
}

// CaddyModule returns the Caddy module information.
func (Track) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.track",
		New: func() caddy.Module { return new(Track) },
	}
}

// Provision finds the table.
func (h *Track) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.full = new(throttle)
	if h.Key == "" {
		return fmt.Errorf("track %s: missing key expression", h.Table)
	}
	t, err := lookupTable(ctx, h.Table)
	if err != nil {
		return fmt.Errorf("track: %v", err)
	}
	h.tbl = t
	h.live = liveTableOf(ctx, h.Table)
	return nil
}

// ServeHTTP tracks the request, runs the rest of the route and counts the
// response.
func (h *Track) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	keyText := h.Key
	if repl != nil {
		keyText = repl.ReplaceAll(h.Key, "")
	}
	k, err := h.tbl.Schema().KeyFrom(keyText)
	if err != nil {
		h.logger.Debug("request not tracked", zap.String("table", h.Table), zap.String("key", keyText), zap.Error(err))
		return next.ServeHTTP(w, r)
	}
	if h.live.denied() {
		return caddyhttp.Error(http.StatusServiceUnavailable, errOutageDeny)
	}
	ref, view, strict, err := h.live.acquire(r.Context(), h.tbl, k, table.Events{Req: true})
	if errors.Is(err, errOutageDeny) {
		return caddyhttp.Error(http.StatusServiceUnavailable, err)
	}
	if err != nil {
		if h.full.allow() {
			h.logger.Warn("request not tracked (at most one such line a second)", zap.String("table", h.Table), zap.String("key", keyText), zap.Error(err))
		}
		return next.ServeHTTP(w, r)
	}
	st := stateOf(r)
	if st == nil {
		st = &reqState{}
		st.w.rww.ResponseWriter = w
		st.w.ResponseWriterWrapper = &st.w.rww
		st.tracked = st.first[:0]
		if r.Body != nil && r.Body != http.NoBody {
			st.body = &countingBody{ReadCloser: r.Body}
			r.Body = st.body
		}
		caddyhttp.SetVar(r.Context(), stateVar, st)
		caddyhttp.SetVar(r.Context(), bytesVar, st)
		if repl != nil {
			repl.Map(st.placeholder)
		}
		w = &st.w
	}
	st.tracked = append(st.tracked, tracked{name: h.Table, tbl: h.tbl, ref: ref, key: keyText, view: view})
	// Deferred: the rest of the route may panic (http.ErrAbortHandler when
	// the origin or the client goes away mid-body); the entry is released
	// on every way out.
	completed := false
	defer func() {
		end := err
		if !completed {
			end = errPanicked // the panic goes on; the request counts as failed
		}
		ev := st.endEvents(end)
		h.tbl.Release(ref, ev)
		strict.release(k, ev)
	}()
	err = next.ServeHTTP(w, r)
	completed = true
	return err
}

// errPanicked stands for the error of a request whose handler panicked.
var errPanicked = errors.New("handler panicked")

// endEvents are the events of a finished request: its status (from the
// response, else from the handler error; a request that panicked or wrote
// nothing counts as 500 when it failed), and the bytes it carried.
func (s *reqState) endEvents(err error) table.Events {
	status := s.w.status
	if status == 0 {
		status = http.StatusOK
		if err != nil {
			status = http.StatusInternalServerError
			var herr caddyhttp.HandlerError
			if errors.As(err, &herr) && herr.StatusCode != 0 {
				status = herr.StatusCode
			}
		}
	}
	ev := table.Events{ReqEnd: true, Status: status, Out: s.w.bytes}
	if s.body != nil {
		ev.In = s.body.n
	}
	return ev
}

// CountBytes adds bytes received from (in) and sent to (out) the client
// outside the request body and the ResponseWriter to every entry tracked in
// the request, at once, so that a long tunnel counts while it is open. It
// may be called from several goroutines while the request runs (the
// tracked entries no longer change then).
func (s *reqState) CountBytes(in, out uint64) {
	for i := range s.tracked {
		tr := &s.tracked[i]
		tr.tbl.Update(tr.ref, table.Events{In: in, Out: out})
	}
}

// placeholder resolves {http.stick.<table>.<data>} for the tables tracked in
// the request (data: any stored value such as http_req_rate or gpc0, plus
// key and banned).
func (s *reqState) placeholder(key string) (any, bool) {
	rest, ok := strings.CutPrefix(key, "http.stick.")
	if !ok {
		return nil, false
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 0 {
		return nil, false
	}
	tr, ok := s.find(rest[:i])
	if !ok {
		return nil, false
	}
	switch data := rest[i+1:]; data {
	case "key":
		return tr.key, true
	case "banned":
		return tr.banned(), true
	default:
		col, err := tr.tbl.Schema().Column(data)
		if err != nil {
			return nil, false
		}
		v, _ := tr.get(col)
		return v, true
	}
}

// countingWriter records the response status and body size.
type countingWriter struct {
	*caddyhttp.ResponseWriterWrapper
	rww    caddyhttp.ResponseWriterWrapper
	status int
	bytes  uint64
}

// WriteHeader records the status of the final response.
func (cw *countingWriter) WriteHeader(status int) {
	if cw.status == 0 && (status >= 200 || status == http.StatusSwitchingProtocols) {
		cw.status = status
	}
	cw.ResponseWriterWrapper.WriteHeader(status)
}

// Write counts body bytes.
func (cw *countingWriter) Write(b []byte) (int, error) {
	if cw.status == 0 {
		cw.status = http.StatusOK
	}
	n, err := cw.ResponseWriterWrapper.Write(b)
	cw.bytes += uint64(n)
	return n, err
}

// ReadFrom counts body bytes sent with io.Copy.
func (cw *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	if cw.status == 0 {
		cw.status = http.StatusOK
	}
	n, err := cw.ResponseWriterWrapper.ReadFrom(r)
	cw.bytes += uint64(n)
	return n, err
}

// Hijack counts a hijacked connection (WebSocket) as 101.
func (cw *countingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if cw.status == 0 {
		cw.status = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(cw.ResponseWriterWrapper.ResponseWriter).Hijack()
}

// countingBody counts request body bytes.
type countingBody struct {
	io.ReadCloser
	n uint64
}

// Read counts request body bytes.
func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += uint64(n)
	return n, err
}

// target names the entry an action or matcher works on: the entry of the
// key expression when one is configured, else the entry track used for the
// table in this request.
type target struct {
	// The table.
	Table string `json:"table"`
	// Optional key expression; by default the key track used for this table
	// in the same request.
	Key string `json:"key,omitempty"`

	tbl  *table.Table
	live *liveTable
}

// set stores v in a column of the entry. On a strict table the entry's
// gpt, server_id and ban go to Redis at once (not at the next sync), so the
// other edges' next requests read them.
func (t *target) set(r *http.Request, col table.Column, v uint64) {
	t.with(r, func(ref table.Ref) {
		t.tbl.Set(ref, col, v)
		if t.live == nil {
			return
		}
		if sh := t.live.sharing.Load(); sh != nil && sh.batcher != nil {
			sh.publish(r.Context(), ref)
		}
	})
}

func (t *target) provision(ctx caddy.Context, directive string) error {
	tbl, err := lookupTable(ctx, t.Table)
	if err != nil {
		return fmt.Errorf("%s: %v", directive, err)
	}
	t.tbl = tbl
	t.live = liveTableOf(ctx, t.Table)
	return nil
}

// provisionColumn finds the table and resolves one of its values.
func (t *target) provisionColumn(ctx caddy.Context, directive, data string) (table.Column, error) {
	if err := t.provision(ctx, directive); err != nil {
		return table.Column{}, err
	}
	col, err := t.tbl.Schema().Column(data)
	if err != nil {
		return table.Column{}, fmt.Errorf("%s %s: %v", directive, t.Table, err)
	}
	return col, nil
}

// key evaluates the key expression of the target.
func (t *target) key(r *http.Request) (table.Key, error) {
	text := t.Key
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		text = repl.ReplaceAll(t.Key, "")
	}
	return t.tbl.Schema().KeyFrom(text)
}

// with runs fn on the target entry, creating it for key expressions. It
// reports false when there is no entry to act on.
func (t *target) with(r *http.Request, fn func(table.Ref)) bool {
	if t.Key == "" {
		tr, ok := stateOf(r).find(t.Table)
		if ok {
			fn(tr.ref)
			tr.view = nil // the request changed the entry: read it from now on
		}
		return ok
	}
	k, err := t.key(r)
	if err != nil {
		return false
	}
	ref, err := t.tbl.Acquire(k, table.Events{})
	if err != nil {
		return false
	}
	defer t.tbl.Release(ref, table.Events{})
	fn(ref)
	return true
}

// parseUintArg parses a non-negative integer argument naming the directive.
func parseUintArg(directive, what, v string) (uint64, error) {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %s %q is not a non-negative integer", directive, what, v)
	}
	return n, nil
}

var (
	_ caddyhttp.MiddlewareHandler = (*Track)(nil)
	_ caddy.Provisioner           = (*Track)(nil)
)
