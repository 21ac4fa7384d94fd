package stats_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// TestClusterSection: with a stick table shared through a real
// redis-server, the page's data carries the table's cluster state (mode,
// connected, last sync, edges, syncs, errors) and the CSV a stick_cluster
// row; after Redis dies, it shows disconnected and counts the errors.
func TestClusterSection(t *testing.T) {
	redisAddr, redis := harness.StartRedis(t)
	port := harness.FreePort(t)
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	auto_https off
	stick_cluster {
		redis redis://%s/0
		node edge-stats
		sync 100ms
		timeout 50ms
	}
	stick_table per_client {
		type string
		size 1000
		expire 10m
		store http_req_cnt
		shared
	}
}

http://127.0.0.1:%d {
	track per_client {header.X-Client}
	respond "ok"
}
`, redisAddr, port))
	harness.WaitListening(t, fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	get(t, fmt.Sprintf("http://127.0.0.1:%d/", port))

	waitFor(t, 10*time.Second, "a sync that saw this edge", func() bool {
		for _, tbl := range stats(t, c).StickTables {
			if cl := tbl.Cluster; tbl.Name == "per_client" && cl != nil && cl.Connected && cl.Syncs > 0 && cl.LastSync != "" && strings.Join(cl.Edges, " ") == "edge-stats" {
				return cl.Mode == "async" && cl.Errors == 0
			}
		}
		return false
	})
	_, csv := c.AdminRequest(http.MethodGet, "/rampart/stats.csv", nil)
	if !strings.Contains(csv, "\nstick_cluster,async,per_client,edge-stats,connected,") {
		t.Errorf("stats.csv has no stick_cluster row for per_client:\n%s", csv)
	}
	_, page := c.AdminRequest(http.MethodGet, "/rampart/stats", nil)
	if !strings.Contains(page, "Cluster (shared stick tables)") {
		t.Error("the page cannot render a cluster section")
	}

	harness.KillRedis(t, redis, redisAddr)
	waitFor(t, 10*time.Second, "the page to show Redis disconnected with errors", func() bool {
		for _, tbl := range stats(t, c).StickTables {
			if cl := tbl.Cluster; tbl.Name == "per_client" && cl != nil {
				return !cl.Connected && cl.Errors > 0
			}
		}
		return false
	})
}
