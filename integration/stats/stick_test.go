package stats_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// TestStickSection: the page lists a stick table with its top keys and the
// stick module's series, and bans a key through its own route.
func TestStickSection(t *testing.T) {
	a := startOrigin(t, "a")
	port := harness.FreePort(t)
	edge := fmt.Sprintf("http://127.0.0.1:%d", port)
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	auto_https off
	stick_table per_ip {
		type ip
		size 1000
		expire 10m
		store http_req_cnt ban
	}
}

http://127.0.0.1:%d {
	track per_ip {remote_host}
	@banned stick per_ip banned
	respond @banned 403
	reverse_proxy %s
}
`, port, a.addr))
	harness.WaitListening(t, strings.TrimPrefix(edge, "http://"), 10*time.Second)
	for range 5 {
		get(t, edge+"/")
	}
	s := stats(t, c)
	if len(s.StickTables) != 1 || s.StickTables[0].Name != "per_ip" || s.StickTables[0].Used != 1 || len(s.StickTables[0].Top) != 1 || !strings.Contains(string(s.StickTables[0].Top[0]), `"key":"127.0.0.1"`) {
		t.Fatalf("stick tables on the page: %+v", s.StickTables)
	}
	found := false
	for _, sec := range s.Sections {
		for _, r := range sec.Rows {
			found = found || sec.Name == "stick" && r.Metric == "rampart_stick_capacity" && r.Labels == "table=per_ip" && r.Value == 1000
		}
	}
	if !found {
		t.Errorf("no stick section with rampart_stick_capacity{table=per_ip} 1000: %+v", s.Sections)
	}
	status, body := c.AdminRequest(http.MethodPut, "/rampart/stick-tables/per_ip/127.0.0.1", strings.NewReader(`{"ban": "10m"}`))
	if status != http.StatusOK {
		t.Fatalf("ban through the stats route: %d %s", status, body)
	}
	if status, _ := get(t, edge+"/"); status != http.StatusForbidden {
		t.Errorf("after the ban: %d, want 403", status)
	}
	if status, body := c.AdminRequest(http.MethodDelete, "/rampart/stick-tables/per_ip/127.0.0.1", nil); status != http.StatusOK {
		t.Errorf("clear: %d %s", status, body)
	}
	if status, _ := get(t, edge+"/"); status != http.StatusOK {
		t.Errorf("after clearing the entry: %d, want 200", status)
	}
}
