package stick_test

import (
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

func reloadCaddyfile(port int, size, period, greeting string) string {
	return fmt.Sprintf(`{
	auto_https off
	stick_table per_ip {
		type ip
		size %s
		expire 1m
		store http_req_cnt http_req_rate(%s) gpc0
	}
}

:%d {
	track per_ip {client_ip}
	respond %q
}
`, size, period, port, greeting)
}

// TestEntriesKeptAcrossReload reloads through the admin API: the same name
// and schema keep the entries (even with a new size and a different site),
// a changed schema starts a fresh table.
func TestEntriesKeptAcrossReload(t *testing.T) {
	port := harness.FreePort(t)
	c := harness.RunCaddyfile(t, reloadCaddyfile(port, "1k", "10s", "one"))
	hc := client()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	for range 3 {
		get(t, hc, url)
	}
	adminJSON(t, c, http.MethodPut, "/stick-tables/per_ip/192.0.2.1", `{"gpc0": 4}`, 200)

	c.Reload(reloadCaddyfile(port, "2k", "10s", "two"))
	if _, _, body := get(t, hc, url); body != "two" {
		t.Fatalf("reload not applied: %q", body)
	}
	e, ok := adminEntry(t, c, "per_ip", "127.0.0.1")
	if !ok || e.Values["http_req_cnt"] != 4 {
		t.Fatalf("after a compatible reload: %+v, want http_req_cnt 4 (3 before + 1 after)", e)
	}
	if e, ok := adminEntry(t, c, "per_ip", "192.0.2.1"); !ok || e.Values["gpc0"] != 4 {
		t.Fatalf("admin-set entry lost across reload: %+v", e)
	}
	tables := adminJSON(t, c, http.MethodGet, "/stick-tables/", "", 200)
	if want := `"size":2048`; !strings.Contains(tables, want) {
		t.Errorf("new size not applied: %s", tables)
	}

	// A different rate period is an incompatible schema: fresh table.
	c.Reload(reloadCaddyfile(port, "2k", "20s", "three"))
	if _, _, body := get(t, hc, url); body != "three" {
		t.Fatalf("reload not applied: %q", body)
	}
	if _, ok := adminEntry(t, c, "per_ip", "192.0.2.1"); ok {
		t.Fatal("entry survived an incompatible schema change")
	}
	if e, _ := adminEntry(t, c, "per_ip", "127.0.0.1"); e.Values["http_req_cnt"] != 1 {
		t.Fatalf("fresh table counts %d, want 1", e.Values["http_req_cnt"])
	}
}

func stickyCaddyfile(port int, upstreams, greeting string) string {
	return fmt.Sprintf(`{
	auto_https off
	stick_table sessions {
		type ip
		size 1k
		expire 10m
		store server_id http_req_cnt
	}
}

:%d {
	header X-Config %q
	track sessions {client_ip}
	reverse_proxy %s {
		lb_policy stick sessions fallback round_robin
	}
}
`, port, greeting, upstreams)
}

// TestStickinessAcrossReload: a client stays on its upstream across
// requests and config reloads; when its upstream leaves the pool the
// fallback chooses and the entry follows.
func TestStickinessAcrossReload(t *testing.T) {
	port := harness.FreePort(t)
	a, b := startHTTPOrigin(t, "A"), startHTTPOrigin(t, "B")
	c := harness.RunCaddyfile(t, stickyCaddyfile(port, a+" "+b, "one"))
	hc := client()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	_, _, first := get(t, hc, url)
	for range 5 {
		if _, _, body := get(t, hc, url); body != first {
			t.Fatalf("client moved from %s to %s without a reload", first, body)
		}
	}
	e, _ := adminEntry(t, c, "sessions", "127.0.0.1")
	if e.Values["server_id"] == 0 {
		t.Fatalf("server_id not stored: %v", e.Values)
	}

	// Reload with the upstreams in the other order: round_robin alone would
	// now start elsewhere; the table keeps the client where it was.
	c.Reload(stickyCaddyfile(port, b+" "+a, "two"))
	for range 4 {
		_, hdr, body := get(t, hc, url)
		if hdr.Get("X-Config") != "two" {
			t.Fatal("reload not applied")
		}
		if body != first {
			t.Fatalf("client moved from %s to %s across a reload", first, body)
		}
	}

	// The client's upstream leaves: the fallback picks the other one and
	// the entry is updated to it.
	other, otherAddr := "B", b
	if first == "B" {
		other, otherAddr = "A", a
	}
	c.Reload(stickyCaddyfile(port, otherAddr, "three"))
	if _, _, body := get(t, hc, url); body != other {
		t.Fatalf("after its upstream left: %s, want %s", body, other)
	}
	c.Reload(stickyCaddyfile(port, a+" "+b, "four"))
	for range 3 {
		if _, _, body := get(t, hc, url); body != other {
			t.Fatalf("entry not updated to the fallback's choice: got %s, want %s", body, other)
		}
	}
}

// stickGoroutines counts the goroutines running code of the stick
// packages (the table clock's ticker, the expiry sweeper).
func stickGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "caddy-rampart/modules/stick") {
			n++
		}
	}
	return n
}

// TestGoroutinesEndWithTheApp reloads 20 times and stops Caddy: the stick
// goroutines stay flat across reloads and none is left after Stop, while
// the table's entries survive every reload.
func TestGoroutinesEndWithTheApp(t *testing.T) {
	port := harness.FreePort(t)
	c := harness.RunCaddyfile(t, reloadCaddyfile(port, "1k", "10s", "g0"))
	hc := client()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	get(t, hc, url)
	running := stickGoroutines()
	if running == 0 {
		t.Fatal("no stick goroutine while the app runs (test cannot see them)")
	}
	for i := 1; i <= 20; i++ {
		c.Reload(reloadCaddyfile(port, "1k", "10s", fmt.Sprintf("g%d", i)))
		get(t, hc, url)
	}
	hc.CloseIdleConnections()
	if got := stickGoroutines(); got != running {
		t.Errorf("stick goroutines %d after 20 reloads, %d before", got, running)
	}
	if e, _ := adminEntry(t, c, "per_ip", "127.0.0.1"); e.Values["http_req_cnt"] != 21 {
		t.Errorf("entry after 20 reloads counts %d requests, want 21", e.Values["http_req_cnt"])
	}
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for stickGoroutines() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := stickGoroutines(); got != 0 {
		buf := make([]byte, 1<<20)
		t.Errorf("%d stick goroutines left after Stop:\n%s", got, buf[:runtime.Stack(buf, true)])
	}
}

// TestAdminAPIFollowsTheConfig: the admin API serves the tables of the
// running config; after a reload to a config without stick tables it
// answers 404, and after a reload back the kept tables are served again.
func TestAdminAPIFollowsTheConfig(t *testing.T) {
	port := harness.FreePort(t)
	c := harness.RunCaddyfile(t, reloadCaddyfile(port, "1k", "10s", "one"))
	adminJSON(t, c, http.MethodPut, "/stick-tables/per_ip/192.0.2.1", `{"gpc0": 4}`, 200)
	c.Reload(fmt.Sprintf("{\n\tauto_https off\n}\n:%d {\n\trespond none\n}\n", port))
	if out := adminJSON(t, c, http.MethodGet, "/stick-tables/", "", 404); !strings.Contains(out, "no stick tables are configured") {
		t.Errorf("without stick tables: %s", out)
	}
	c.Reload(reloadCaddyfile(port, "1k", "10s", "two"))
	if _, ok := adminEntry(t, c, "per_ip", "192.0.2.1"); ok {
		t.Error("a table dropped from the config came back with its entries")
	}
	if out := adminJSON(t, c, http.MethodGet, "/stick-tables/", "", 200); !strings.Contains(out, `"name":"per_ip"`) {
		t.Errorf("tables after the reload back: %s", out)
	}
}
