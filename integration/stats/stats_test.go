package stats_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// edge is an in-process Caddy proxying one site to origins.
type edge struct {
	caddy *harness.Caddy
	url   string // http://127.0.0.1:port
	port  int
}

func proxyCaddyfile(port int, extra string, origins ...*origin) string {
	addrs := make([]string, len(origins))
	for i, o := range origins {
		addrs[i] = o.addr
	}
	if extra != "" {
		extra = "\t" + extra + "\n"
	}
	return fmt.Sprintf(`{
	auto_https off
}

http://127.0.0.1:%d {
%s	reverse_proxy %s {
		lb_policy round_robin
	}
}
`, port, extra, strings.Join(addrs, " "))
}

func startEdge(t testing.TB, extra string, origins ...*origin) *edge {
	t.Helper()
	e := &edge{port: harness.FreePort(t)}
	e.url = fmt.Sprintf("http://127.0.0.1:%d", e.port)
	e.caddy = harness.RunCaddyfile(t, proxyCaddyfile(e.port, extra, origins...))
	harness.WaitListening(t, strings.TrimPrefix(e.url, "http://"), 10*time.Second)
	t.Cleanup(func() {
		for _, o := range origins { // states are the process's: leave none behind
			e.caddy.AdminRequest(http.MethodPut, "/rampart/upstreams/"+o.addr, strings.NewReader(`{"state":"ready"}`))
		}
	})
	return e
}

// TestFiguresAndFormats: per-upstream requests, status classes and latency
// appear in stats.json, the CSV, the page and the Prometheus metrics.
func TestFiguresAndFormats(t *testing.T) {
	a, b := startOrigin(t, "a"), startOrigin(t, "b")
	e := startEdge(t, "", a, b)
	for i := range 20 {
		q := "/?ms=2"
		if i < 4 {
			q = "/?status=503" // round robin: two reach each origin
		}
		get(t, e.url+q)
	}
	s := stats(t, e.caddy)
	if !s.Admin {
		t.Error("the admin API's snapshot is not admin")
	}
	rows := 0
	for _, u := range s.Upstreams {
		if u.Kind != "reverse_proxy" || (u.Address != a.addr && u.Address != b.addr) {
			continue
		}
		rows++
		if u.State != "ready" || !u.Healthy || u.Requests != 10 || u.Responses["2xx"] != 8 || u.Responses["5xx"] != 2 || u.LatencyAvgMs <= 0 || u.LatencyP99Ms <= 0 {
			t.Errorf("upstream row %+v: want ready, healthy, 10 requests, 8 2xx, 2 5xx, latencies", u)
		}
	}
	if rows != 2 {
		t.Fatalf("%d upstream rows for the two origins: %+v", rows, s.Upstreams)
	}

	status, csv := e.caddy.AdminRequest(http.MethodGet, "/rampart/stats.csv", nil)
	lines := strings.Split(strings.TrimSpace(csv), "\n")
	const header = "section,kind,group,name,state,healthy,current,total,r1xx,r2xx,r3xx,r4xx,r5xx,rerror,latency_avg_ms,latency_p99_ms,value,keep_sticky,last_check,last_check_ok,fails,fails_total"
	if status != http.StatusOK || lines[0] != header {
		t.Fatalf("stats.csv: %d, header %q", status, lines[0])
	}
	want := fmt.Sprintf("upstream,reverse_proxy,srv0 #1,%s,ready,true,0,10,0,8,0,0,2,0,", a.addr)
	if !strings.Contains(csv, want) {
		t.Errorf("stats.csv has no row starting %q:\n%s", want, csv)
	}

	status, page := e.caddy.AdminRequest(http.MethodGet, "/rampart/stats", nil)
	if status != http.StatusOK || !strings.Contains(page, "<title>Rampart stats</title>") || !strings.Contains(page, `data-json="/rampart/stats.json"`) {
		t.Errorf("page: %d %.200s", status, page)
	}
	if strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Error("the page refers to an external asset")
	}

	_, metrics := e.caddy.AdminRequest(http.MethodGet, "/metrics", nil)
	for _, series := range []string{
		fmt.Sprintf(`rampart_upstream_requests_total{upstream=%q} 10`, a.addr),
		fmt.Sprintf(`rampart_upstream_responses_total{class="5xx",upstream=%q} 2`, a.addr),
		fmt.Sprintf(`rampart_upstream_latency_seconds_count{upstream=%q} 10`, b.addr),
		fmt.Sprintf(`rampart_upstream_in_flight{kind="reverse_proxy",upstream=%q} 0`, b.addr),
		fmt.Sprintf(`rampart_upstream_state{kind="reverse_proxy",upstream=%q} 0`, b.addr),
	} {
		if !strings.Contains(metrics, series) {
			t.Errorf("metrics lack %s", series)
		}
	}
}

// TestZeroDowntimeDeploy: two upstreams under continuous load; one is put
// in drain (its in-flight requests finish, it gets no new ones), then maint,
// then ready again (it gets requests again); not one request fails.
func TestZeroDowntimeDeploy(t *testing.T) {
	a, b := startOrigin(t, "a"), startOrigin(t, "b")
	e := startEdge(t, "", a, b)
	l := startLoad(e.url+"/?ms=5", 6)

	// slow requests, some of them on a, in flight when a is drained
	var slow sync.WaitGroup
	slowFailures := make(chan string, 8)
	for range 8 {
		slow.Add(1)
		go func() {
			defer slow.Done()
			resp, err := client.Get(e.url + "/?ms=1500")
			if err != nil {
				slowFailures <- err.Error()
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				slowFailures <- resp.Status
			}
		}()
	}
	waitFor(t, 5*time.Second, "a slow request in flight on a", func() bool { return a.inFlight.Load() > 0 })
	setState(t, e.caddy, a.addr, "drain")
	time.Sleep(100 * time.Millisecond) // requests selected just before the PUT reach a
	drainedAt := a.requests.Load()
	inFlight := a.inFlight.Load()
	if inFlight == 0 {
		t.Fatal("no request in flight on a right after drain: the test proves nothing")
	}
	s := stats(t, e.caddy)
	for _, u := range s.Upstreams {
		if u.Address == a.addr && (u.State != "drain" || u.Current == 0 || !strings.HasPrefix(u.StateBy, "admin API 127.0.0.1:")) {
			t.Errorf("a while draining: %+v (want drain, requests in flight, changed by the admin API)", u)
		}
	}
	slow.Wait() // a's in-flight requests finish
	close(slowFailures)
	for f := range slowFailures {
		t.Errorf("an in-flight request failed while its upstream drained: %s", f)
	}
	waitFor(t, 5*time.Second, "a's in-flight count at 0 on the page", func() bool {
		for _, u := range stats(t, e.caddy).Upstreams {
			if u.Address == a.addr {
				return u.Current == 0
			}
		}
		return false
	})
	if got := a.requests.Load(); got != drainedAt {
		t.Errorf("a got %d new requests while draining", got-drainedAt)
	}

	setState(t, e.caddy, a.addr, "maint")
	time.Sleep(300 * time.Millisecond)
	for _, u := range stats(t, e.caddy).Upstreams {
		if u.Address == a.addr && (u.State != "maint" || u.Healthy) {
			t.Errorf("a in maintenance: %+v (want maint, not healthy)", u)
		}
	}
	if got := a.requests.Load(); got != drainedAt {
		t.Errorf("a got %d new requests in maintenance", got-drainedAt)
	}

	setState(t, e.caddy, a.addr, "ready")
	waitFor(t, 5*time.Second, "a serving again after ready", func() bool { return a.requests.Load() > drainedAt+5 })
	ok, failures := l.finish()
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed, first: %s", len(failures), ok+len(failures), failures[0])
	}
	if ok < 50 {
		t.Errorf("only %d requests under load", ok)
	}
	_, metrics := e.caddy.AdminRequest(http.MethodGet, "/metrics", nil)
	for _, series := range []string{`rampart_upstream_state_changes_total{state="drain"}`, `rampart_upstream_state_changes_total{state="maint"}`} {
		if !strings.Contains(metrics, series) {
			t.Errorf("metrics lack %s", series)
		}
	}
}

// TestStateSurvivesReload: a drained upstream stays drained across a config
// reload and gets no requests from the new config.
func TestStateSurvivesReload(t *testing.T) {
	a, b := startOrigin(t, "a"), startOrigin(t, "b")
	e := startEdge(t, "", a, b)
	setState(t, e.caddy, a.addr, "drain")
	e.caddy.Reload(proxyCaddyfile(e.port, `header X-Reloaded yes`, a, b))
	status, body := get(t, e.url+"/")
	if status != http.StatusOK {
		t.Fatalf("after reload: %d %s", status, body)
	}
	before := a.requests.Load()
	for range 10 {
		if _, body := get(t, e.url+"/"); body != "origin=b\n" {
			t.Errorf("after reload, a drained upstream answered: %q", body)
		}
	}
	if a.requests.Load() != before {
		t.Error("the drained upstream got requests after the reload")
	}
	found := false
	for _, u := range stats(t, e.caddy).Upstreams {
		if u.Address == a.addr {
			found = true
			if u.State != "drain" {
				t.Errorf("after reload a is %q, want drain", u.State)
			}
		}
	}
	if !found {
		t.Error("a is not on the page after the reload")
	}
}

// TestBadInput: 4xx JSON errors naming what was wrong; unknown upstream 404.
func TestBadInput(t *testing.T) {
	a := startOrigin(t, "a")
	e := startEdge(t, "", a)
	for _, tc := range []struct {
		method, path, body string
		status             int
		mention            string
	}{
		{http.MethodPut, "/rampart/upstreams/127.0.0.1:1", `{"state":"drain"}`, http.StatusNotFound, "127.0.0.1:1"},
		{http.MethodPut, "/rampart/upstreams/" + a.addr, `{"state":"off"}`, http.StatusBadRequest, `"off"`},
		{http.MethodPut, "/rampart/upstreams/" + a.addr, `drain`, http.StatusBadRequest, "JSON object"},
		{http.MethodPut, "/rampart/upstreams/" + a.addr, `{"state":"drain","sticky":1}`, http.StatusBadRequest, "sticky"},
		{http.MethodPut, "/rampart/upstreams/" + a.addr, `{}`, http.StatusBadRequest, `"state"`},
		{http.MethodPut, "/rampart/upstreams/" + a.addr, `{"state":"maint","keep_sticky":true}`, http.StatusBadRequest, "keep_sticky applies to drain only"},
		{http.MethodPut, "/rampart/upstreams/" + a.addr, `{"state":"drain","keep_sticky":"yes"}`, http.StatusBadRequest, "keep_sticky"},
		{http.MethodPut, "/rampart/upstreams/" + a.addr, `{"state":"drain"} {}`, http.StatusBadRequest, "one JSON object"},
		{http.MethodPut, "/rampart/upstreams/", `{"state":"drain"}`, http.StatusBadRequest, "needs an upstream"},
		{http.MethodDelete, "/rampart/upstreams/" + a.addr, ``, http.StatusMethodNotAllowed, "DELETE"},
		{http.MethodGet, "/rampart/upstreams/127.0.0.1:1", ``, http.StatusNotFound, "127.0.0.1:1"},
		{http.MethodPost, "/rampart/stats.json", `{}`, http.StatusMethodNotAllowed, "POST"},
		{http.MethodPut, "/rampart/stick-tables/t/k", `{}`, http.StatusNotFound, "no stick tables"},
	} {
		var body *strings.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		var status int
		var got string
		if body != nil {
			status, got = e.caddy.AdminRequest(tc.method, tc.path, body)
		} else {
			status, got = e.caddy.AdminRequest(tc.method, tc.path, nil)
		}
		var msg struct {
			Error string `json:"error"`
		}
		if status != tc.status || json.Unmarshal([]byte(got), &msg) != nil || !strings.Contains(msg.Error, tc.mention) {
			t.Errorf("%s %s %s: %d %s (want %d and an error naming %s)", tc.method, tc.path, tc.body, status, got, tc.status, tc.mention)
		}
	}
	for _, u := range stats(t, e.caddy).Upstreams {
		if u.Address == a.addr && u.State != "ready" {
			t.Errorf("bad input changed the state: %+v", u)
		}
	}
}
