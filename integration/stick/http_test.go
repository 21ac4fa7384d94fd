package stick_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// limitCaddyfile is a per-IP limit of 5 requests per second: the 6th gets a
// 429; the current rate is passed upstream in a header.
func limitCaddyfile(port int, origin string) string {
	return fmt.Sprintf(`{
	auto_https off
	stick_table per_ip {
		type ip
		size 1k
		expire 1m
		store http_req_rate(1s) http_req_cnt http_err_cnt http_err_rate(10s) req_cur gpc(1) gpt(1) ban
	}
}

:%d {
	track per_ip {client_ip}
	@hot stick per_ip http_req_rate gt 5
	@banned stick per_ip banned
	@slow path /slow*
	respond @banned 403
	respond @hot 429
	tarpit @slow 300ms 429
	stick_inc per_ip gpc0
	stick_set per_ip gpt0 {http.stick.per_ip.http_req_cnt}
	reverse_proxy %s {
		header_up X-Req-Rate {http.stick.per_ip.http_req_rate}
	}
}
`, port, origin)
}

// startRateOrigin answers with the X-Req-Rate header it received.
func startRateOrigin(t *testing.T) string {
	t.Helper()
	return startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "rate="+r.Header.Get("X-Req-Rate"))
	})
}

func startOrigin(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := &http.Server{Handler: h}
	ln := listen(t)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestPerIPLimitEndToEnd(t *testing.T) {
	port := harness.FreePort(t)
	c := harness.RunCaddyfile(t, limitCaddyfile(port, startRateOrigin(t)))
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	hc := client()

	// Start just after a period boundary (the table clock has millisecond
	// resolution) so that all requests fall in one period.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 20*time.Millisecond)))
	for i := 1; i <= 5; i++ {
		status, _, body := get(t, hc, url)
		if status != 200 || body != "rate="+strconv.Itoa(i) {
			t.Fatalf("request %d: %d %q, want 200 with rate=%d passed upstream", i, status, body, i)
		}
	}
	status, _, _ := get(t, hc, url)
	if status != http.StatusTooManyRequests {
		t.Fatalf("6th request: %d, want 429", status)
	}
	e, ok := adminEntry(t, c, "per_ip", "127.0.0.1")
	if !ok {
		t.Fatal("no entry for 127.0.0.1")
	}
	// stick_inc and stick_set run before respond (directive order), so the
	// refused request went through them too.
	if e.Values["http_req_cnt"] != 6 || e.Values["http_err_cnt"] != 1 || e.Values["gpc0"] != 6 || e.Values["gpt0"] != 6 {
		t.Errorf("entry after 6 requests: %v (want http_req_cnt 6, http_err_cnt 1 for the 429, gpc0 6, gpt0 6)", e.Values)
	}
	if e.Values["req_cur"] != 0 {
		t.Errorf("req_cur = %d with no request in flight", e.Values["req_cur"])
	}
	// Two periods later the rate has decayed and the client is served again.
	time.Sleep(2100 * time.Millisecond)
	if status, _, body := get(t, hc, url); status != 200 || body != "rate=1" {
		t.Fatalf("after the period: %d %q, want 200 rate=1", status, body)
	}
}

func TestTarpitDelay(t *testing.T) {
	port := harness.FreePort(t)
	c := harness.RunCaddyfile(t, limitCaddyfile(port, startRateOrigin(t)))
	hc := client()
	const httpRejections = `rampart_stick_rejections_total{layer="http",table="per_ip"}`
	before := metric(t, c, httpRejections)
	start := time.Now()
	status, hdr, _ := get(t, hc, fmt.Sprintf("http://127.0.0.1:%d/slow", port))
	took := time.Since(start)
	if status != http.StatusTooManyRequests || hdr.Get("Retry-After") != "1" {
		t.Fatalf("tarpit answered %d Retry-After %q, want 429 and 1", status, hdr.Get("Retry-After"))
	}
	if took < 300*time.Millisecond || took > 3*time.Second {
		t.Fatalf("tarpit held the request %v, want about 300ms", took)
	}
	t.Logf("tarpit delay measured: %v (configured 300ms)", took)
	e, _ := adminEntry(t, c, "per_ip", "127.0.0.1")
	if e.Values["http_err_cnt"] != 1 {
		t.Errorf("tarpitted request not counted as an HTTP error: %v", e.Values)
	}
	if got := metric(t, c, httpRejections) - before; got != 1 {
		t.Errorf("tarpit rejections counted %v, want 1", got)
	}
	_, body := c.AdminRequest(http.MethodGet, "/metrics", nil)
	for _, want := range []string{`rampart_stick_entries{table="per_ip"} 1`, `rampart_stick_capacity{table="per_ip"} 1024`, `rampart_stick_evictions_total{table="per_ip"} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(body, "rampart_stick"))
		}
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestAdminAPI covers listing, filters, sort, limit, get, put, delete and the
// 4xx errors.
func TestAdminAPI(t *testing.T) {
	port := harness.FreePort(t)
	c := harness.RunCaddyfile(t, limitCaddyfile(port, startRateOrigin(t)))
	hc := client()
	for range 3 {
		get(t, hc, fmt.Sprintf("http://127.0.0.1:%d/", port))
	}
	for _, k := range []string{"192.0.2.1", "192.0.2.2", "2001:db8::7"} {
		adminJSON(t, c, http.MethodPut, "/stick-tables/per_ip/"+k, `{"gpt0": 7}`, 200)
	}
	adminJSON(t, c, http.MethodPut, "/stick-tables/per_ip/192.0.2.2", `{"http_req_cnt": 50, "ban": "10m"}`, 200)

	var tables []map[string]any
	if err := json.Unmarshal([]byte(adminJSON(t, c, http.MethodGet, "/stick-tables/", "", 200)), &tables); err != nil {
		t.Fatal(err)
	}
	if len(tables) != 1 || tables[0]["name"] != "per_ip" || tables[0]["type"] != "ip" || tables[0]["used"] != 4.0 ||
		tables[0]["size"] != 1024.0 || tables[0]["expire"] != "1m" {
		t.Errorf("table list: %v", tables)
	}

	list := func(query string) []entry {
		var es []entry
		if err := json.Unmarshal([]byte(adminJSON(t, c, http.MethodGet, "/stick-tables/per_ip?"+query, "", 200)), &es); err != nil {
			t.Fatal(err)
		}
		return es
	}
	if es := list("sort=http_req_cnt&limit=2"); len(es) != 2 || es[0].Key != "192.0.2.2" || es[1].Key != "127.0.0.1" {
		t.Errorf("sorted by http_req_cnt, limit 2: %+v", es)
	}
	if es := list("filter=gpt0>=7&filter=http_req_cnt<10"); len(es) != 2 {
		t.Errorf("filter gpt0>=7 and http_req_cnt<10: %+v", es)
	}
	if es := list("filter=banned"); len(es) != 1 || es[0].Key != "192.0.2.2" || es[0].Values["ban"] < 590_000 {
		t.Errorf("filter banned: %+v", es)
	}
	if es := list("sort=key&order=asc"); len(es) != 4 || es[0].Key != "127.0.0.1" || es[3].Key != "2001:db8::7" {
		t.Errorf("sort by key: %+v", es)
	}
	e, ok := adminEntry(t, c, "per_ip", "2001:db8::7")
	if !ok || e.Values["gpt0"] != 7 || e.ExpiresInMs <= 0 || e.ExpiresInMs > 60_000 {
		t.Errorf("GET entry: %+v", e)
	}
	if out := adminJSON(t, c, http.MethodDelete, "/stick-tables/per_ip?filter=gpt0=7", "", 200); !strings.Contains(out, `"deleted":3`) {
		t.Errorf("delete by filter: %s", out)
	}
	adminJSON(t, c, http.MethodDelete, "/stick-tables/per_ip/127.0.0.1", "", 200)
	if _, ok := adminEntry(t, c, "per_ip", "127.0.0.1"); ok {
		t.Error("entry still there after DELETE")
	}

	for _, bad := range []struct {
		method, path, body string
		status             int
		msg                string
	}{
		{"GET", "/stick-tables/nope", "", 404, `no stick table named "nope"`},
		{"GET", "/stick-tables/per_ip?filter=rate>1", "", 400, `does not store "rate"`},
		{"GET", "/stick-tables/per_ip?filter=gpc0~1", "", 400, "want <data><op><value>"},
		{"GET", "/stick-tables/per_ip?limit=x", "", 400, `limit "x"`},
		{"GET", "/stick-tables/per_ip?sort=nope", "", 400, `sort "nope"`},
		{"GET", "/stick-tables/per_ip?colour=red", "", 400, `unknown query parameter "colour"`},
		{"GET", "/stick-tables/per_ip/not-an-ip", "", 400, "is not an IP address"},
		{"GET", "/stick-tables/per_ip/192.0.2.99", "", 404, "has no entry"},
		{"PUT", "/stick-tables/per_ip/192.0.2.9", `{"gpc7": 1}`, 400, `does not store "gpc7"`},
		{"PUT", "/stick-tables/per_ip/192.0.2.9", `{"gpc0": -1}`, 400, "not a non-negative integer"},
		{"PUT", "/stick-tables/per_ip/192.0.2.9", `{"ban": "soon"}`, 400, `ban "soon"`},
		{"PUT", "/stick-tables/per_ip/192.0.2.9", `not json`, 400, "not a JSON object"},
		{"POST", "/stick-tables/per_ip", "", 405, "method POST not allowed"},
	} {
		var r io.Reader
		if bad.body != "" {
			r = strings.NewReader(bad.body)
		}
		status, out := c.AdminRequest(bad.method, bad.path, r)
		var je struct{ Error string }
		if status != bad.status || json.Unmarshal([]byte(out), &je) != nil || !strings.Contains(je.Error, bad.msg) {
			t.Errorf("%s %s: %d %s; want %d JSON naming %s", bad.method, bad.path, status, out, bad.status, bad.msg)
		}
	}
}

// TestTarpitHandleErrors: tarpit answers through Caddy's error handling
// (after its delay), so a site's handle_errors renders its own 429 page,
// with Retry-After still set and the request still counted as an error.
func TestTarpitHandleErrors(t *testing.T) {
	port := harness.FreePort(t)
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	auto_https off
	stick_table per_ip {
		type ip
		size 1k
		store http_err_cnt
	}
}

:%d {
	track per_ip {client_ip}
	tarpit 200ms
	handle_errors 429 {
		respond "slow down: {err.status_code}" 429
	}
}
`, port))
	start := time.Now()
	status, hdr, body := get(t, client(), fmt.Sprintf("http://127.0.0.1:%d/", port))
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("answered after %v, before the 200ms delay", took)
	}
	if status != http.StatusTooManyRequests || body != "slow down: 429" || hdr.Get("Retry-After") != "1" {
		t.Fatalf("tarpit with handle_errors: %d %q Retry-After %q; want the site's own 429 page and Retry-After 1", status, body, hdr.Get("Retry-After"))
	}
	if e, _ := adminEntry(t, c, "per_ip", "127.0.0.1"); e.Values["http_err_cnt"] != 1 {
		t.Errorf("tarpitted request not counted as an error: %v", e.Values)
	}
}

// TestAdminAPIEdgeCases: a huge ban is clamped (it never wraps around into
// no ban), trailing data after the JSON body is refused, a body over 1 MiB
// is a 413, and a string key cut by len inside a UTF-8 character is
// addressable by the key the API prints.
func TestAdminAPIEdgeCases(t *testing.T) {
	port := harness.FreePort(t)
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	auto_https off
	stick_table per_ip {
		type ip
		size 1k
		store gpc0 ban
	}
	stick_table names {
		type string len 4
		size 1k
		store http_req_cnt
	}
}

:%d {
	track names {header.X-Name}
	respond ok
}
`, port))
	out := adminJSON(t, c, http.MethodPut, "/stick-tables/per_ip/192.0.2.1", `{"ban": 9223372036854775807}`, 200)
	var e entry
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatal(err)
	}
	const hundredYears = 100 * 365 * 24 * 3600 * 1000
	if e.Values["ban"] < hundredYears-60_000 || e.Values["ban"] > hundredYears {
		t.Errorf("ban of 2^63-1 ms: %d ms left, want it clamped to 100 years (%d ms)", e.Values["ban"], uint64(hundredYears))
	}
	var banned []entry
	_ = json.Unmarshal([]byte(adminJSON(t, c, http.MethodGet, "/stick-tables/per_ip?filter=banned", "", 200)), &banned)
	if len(banned) != 1 {
		t.Errorf("huge ban not in force: %+v", banned)
	}

	for _, bad := range []struct {
		body   string
		status int
		msg    string
	}{
		{`{"gpc0": 2} xyz`, 400, "trailing data after the JSON object"},
		{`{"gpc0": 2}{"gpc0": 3}`, 400, "trailing data after the JSON object"},
		{`{"gpc0": ` + strings.Repeat("1", 2<<20) + `}`, 413, "larger than 1 MiB"},
		{`{"ban": "10"}`, 400, `ban "10"`},
	} {
		status, out := c.AdminRequest(http.MethodPut, "/stick-tables/per_ip/192.0.2.2", strings.NewReader(bad.body))
		var je struct{ Error string }
		if status != bad.status || json.Unmarshal([]byte(out), &je) != nil || !strings.Contains(je.Error, bad.msg) {
			t.Errorf("PUT %.40q: %d %.200s; want %d JSON naming %q", bad.body, status, out, bad.status, bad.msg)
		}
	}
	if _, ok := adminEntry(t, c, "per_ip", "192.0.2.2"); ok {
		t.Error("a refused PUT created its entry")
	}

	// "abcé" is 5 bytes; len 4 cuts inside the é.
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
	req.Header.Set("X-Name", "abcé")
	resp, err := client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var names []entry
	if err := json.Unmarshal([]byte(adminJSON(t, c, http.MethodGet, "/stick-tables/names", "", 200)), &names); err != nil || len(names) != 1 {
		t.Fatalf("names: %v %+v", err, names)
	}
	printed := names[0].Key
	if e, ok := adminEntry(t, c, "names", url.PathEscape(printed)); !ok || e.Values["http_req_cnt"] != 1 {
		t.Errorf("entry printed as %q cannot be addressed by that key: %+v %v", printed, e, ok)
	}
	if printed != "abc" {
		t.Errorf("key cut to %q, want %q (the last whole character within 4 bytes)", printed, "abc")
	}
}
