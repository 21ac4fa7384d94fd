package stick

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/modules/stick/table"
)

// FuzzParseGlobalOption feeds stick_table blocks to the global option
// parser: it errors or yields a table whose schema builds.
func FuzzParseGlobalOption(f *testing.F) {
	for _, seed := range []string{
		"stick_table t {\n type ip\n size 1m\n expire 10m\n store http_req_rate(10s) gpc(2) ban\n ipv6_prefix 64\n}",
		"stick_table s {\n type string len 8\n size 10k\n store gpc0,gpt0\n}",
		"stick_table b {\n type binary\n size 1\n}",
		"stick_table x {\n type ip\n size 0\n}",
		"stick_table y {\n colour red\n}",
		"stick_table",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		out, err := ParseGlobalOption(caddyfile.NewTestDispenser(input), nil)
		if err != nil {
			return
		}
		var app App
		if err := json.Unmarshal(out.(httpcaddyfile.App).Value, &app); err != nil {
			t.Fatalf("%q produced bad JSON: %v", input, err)
		}
		for name, tc := range app.Tables {
			if _, err := tc.Validate(name); err != nil {
				t.Fatalf("%q accepted but its schema fails: %v", input, err)
			}
			if tc.Size < 1 {
				t.Fatalf("%q accepted with size %d", input, tc.Size)
			}
		}
	})
}

func testTable(t testing.TB, store ...string) *liveTable {
	t.Helper()
	tc := &TableConfig{Type: "ip", Size: 1000, Store: store}
	s, err := tc.Validate("t")
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := table.New(s, table.Options{Size: tc.Size})
	if err != nil {
		t.Fatal(err)
	}
	return &liveTable{name: "t", tbl: tbl, schema: s}
}

// FuzzConditionAndFilter feeds the condition grammar (matchers, reject
// rules) and the admin API filters: they error or compile against a table.
func FuzzConditionAndFilter(f *testing.F) {
	for _, seed := range []string{"http_req_rate gt 100", "banned", "gpc0 ne 0", "gpc0 gt", "x y z", "gpc0>1", "ban>=5", "gpt0 == 3"} {
		f.Add(seed)
	}
	lt := testTable(f, "http_req_rate(10s)", "gpc(1)", "gpt(1)", "ban")
	f.Fuzz(func(t *testing.T, input string) {
		if c, err := parseOneCondition(strings.Fields(input), "stick"); err == nil {
			if _, err := c.compile("t", lt.tbl); err == nil {
				again, err := parseOneCondition(strings.Fields(c.String()), "stick")
				if err != nil || again != c {
					t.Fatalf("%q prints as %q which parses differently (%v)", input, c, err)
				}
			}
		}
		if fl, err := parseFilter(lt, input); err == nil && !fl.cond.banned && fl.cond.op == nil {
			t.Fatalf("filter %q accepted without a comparison", input)
		}
	})
}

// request builds a request as Caddy's server prepares it: a replacer and
// the vars map with client_ip.
func request(ip string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	repl := caddy.NewReplacer()
	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: ip})
	r = r.WithContext(ctx)
	repl.Set("http.vars.client_ip", ip)
	return r
}

// TestTrackCountsStatus runs the track handler around handlers that answer
// 200, 404, 503 and 501 and with a handler error, and the stick matcher and
// placeholders inside it.
func TestTrackCountsStatus(t *testing.T) {
	lt := testTable(t, "http_req_cnt", "http_err_cnt", "http_fail_cnt", "bytes_out_cnt", "req_cur", "gpc(1)")
	h := &Track{Table: "t", Key: "{http.vars.client_ip}", tbl: lt.tbl, logger: zap.NewNop()}
	m := &MatchStick{target: target{Table: "t", tbl: lt.tbl}, Condition: Condition{Data: "req_cur", Op: "eq", Value: 1}}
	var err error
	if m.cond, err = m.Condition.compile("t", lt.tbl); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		status int
		err    error
	}{{200, nil}, {404, nil}, {503, nil}, {501, nil}, {0, caddyhttp.Error(http.StatusForbidden, nil)}} {
		r := request("192.0.2.1")
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			if ok, _ := m.MatchWithError(r); !ok {
				t.Error("stick matcher: req_cur is not 1 inside the request")
			}
			repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
			if got := repl.ReplaceAll("{http.stick.t.http_req_cnt}/{http.stick.t.key}/{http.stick.t.nope}", "-"); !strings.HasSuffix(got, "/192.0.2.1/-") {
				t.Errorf("placeholders: %q", got)
			}
			if tc.err != nil {
				return tc.err
			}
			w.WriteHeader(tc.status)
			_, _ = w.Write([]byte("hello"))
			return nil
		})
		if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != tc.err {
			t.Fatalf("ServeHTTP: %v", err)
		}
	}
	k, _ := lt.schema.KeyFrom("192.0.2.1")
	e, _ := lt.tbl.Snapshot(k)
	got := map[string]uint64{}
	for i, c := range lt.schema.Columns() {
		got[c.Name] = e.Values[i]
	}
	// 404 and the 403 error are errors; 503 is a failure, 501 is neither.
	want := map[string]uint64{"http_req_cnt": 5, "http_err_cnt": 2, "http_fail_cnt": 1, "bytes_out_cnt": 20, "req_cur": 0, "gpc0": 0}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s = %d, want %d", name, got[name], w)
		}
	}
}

// BenchmarkHTTPTrackMatch is the per-request cost of the glue: track (with
// its response writer wrapper and placeholders) plus one stick matcher,
// around a handler that writes a small response. Compare with
// BenchmarkHTTPBaseline, the same request without tracking.
func BenchmarkHTTPTrackMatch(b *testing.B) {
	lt := testTable(b, "http_req_rate(10s)", "conn_cur", "gpc(1)")
	h := &Track{Table: "t", Key: "{http.vars.client_ip}", tbl: lt.tbl, logger: zap.NewNop()}
	m := &MatchStick{target: target{Table: "t", tbl: lt.tbl}, Condition: Condition{Data: "http_req_rate", Op: "gt", Value: 1 << 40}}
	m.cond, _ = m.Condition.compile("t", lt.tbl)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if m.Match(r) {
			w.WriteHeader(http.StatusTooManyRequests)
			return nil
		}
		_, err := w.Write([]byte("hello"))
		return err
	})
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		_ = h.ServeHTTP(w, request("192.0.2.1"), next)
	}
}

// BenchmarkHTTPBaseline is BenchmarkHTTPTrackMatch's request without the
// stick handlers.
func BenchmarkHTTPBaseline(b *testing.B) {
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		_, err := w.Write([]byte("hello"))
		return err
	})
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		_ = next.ServeHTTP(w, request("192.0.2.1"))
	}
}

// TestUntilRoundAligns: sync rounds start at the multiples of sync (plus
// the pull delay), whatever the current time.
func TestUntilRoundAligns(t *testing.T) {
	sh := &shared{every: 100 * time.Millisecond}
	base := time.Unix(1_800_000_000, 0)
	for _, off := range []time.Duration{0, time.Millisecond, 49 * time.Millisecond, 50 * time.Millisecond, 99 * time.Millisecond} {
		now := base.Add(off)
		for _, offset := range []time.Duration{0, 50 * time.Millisecond} {
			d := sh.untilRound(now, offset)
			at := now.Add(d)
			if d <= 0 || d > sh.every || (at.UnixNano()-offset.Nanoseconds())%sh.every.Nanoseconds() != 0 {
				t.Errorf("at +%v offset %v: waits %v until %v", off, offset, d, at.Sub(base))
			}
		}
	}
}
