package cluster_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// strictConfig is the Caddyfile of a strict edge: /cnt limits http_req_cnt,
// /rate limits http_req_rate(1h), both per X-Client.
const strictConfig = `{
	admin 127.0.0.1:%[1]s
	log {
		level WARN
	}
	stick_cluster {
		redis %[3]s
		node %[4]s
		sync %[5]s
		timeout %[6]s
		on_outage local
	}
	stick_table per_client {
		type string
		size 100k
		expire 10m
		store http_req_cnt http_req_rate(1h) req_cur ban
		shared strict
	}
}

http://127.0.0.1:%[2]s {
	track per_client {header.X-Client}
	@banned stick per_client banned
	@cnt {
		path /cnt
		stick per_client http_req_cnt gt %[7]d
	}
	@rate {
		path /rate
		stick per_client http_req_rate gt %[7]d
	}
	@banme path /ban
	stick_ban @banme per_client 10m
	respond @banned "banned" 403
	respond @cnt "over" 429
	respond @rate "over" 429
	respond "ok {http.stick.per_client.http_req_cnt}"
}
`

// startStrictEdges runs n strict edges against redisURL.
func startStrictEdges(t *testing.T, n int, redisURL string, limit int, timeout time.Duration) []*edge {
	t.Helper()
	bin := harness.BuildCaddy(t)
	edges := make([]*edge, n)
	for i := range edges {
		e, port, admin := newEdge(t, i)
		e.proc = runEdge(t, bin, fmt.Sprintf(strictConfig, admin, port, redisURL, e.name, syncEvery, timeout, limit), e.addr)
		edges[i] = e
	}
	return edges
}

// runConcurrent sends each requests as clientID to path from clients
// goroutines per edge at once, all edges at once, until stop is closed when
// each is 0.
func runConcurrent(t *testing.T, edges []*edge, path, clientID string, clients, each int, stop <-chan struct{}) *load {
	l := &load{codes: map[int]int{}}
	var wg sync.WaitGroup
	for _, e := range edges {
		for range clients {
			wg.Go(func() {
				for i := 0; each == 0 || i < each; i++ {
					select {
					case <-stop:
						return
					default:
					}
					code, took := e.get(t, path, clientID)
					l.mu.Lock()
					l.sent++
					l.codes[code]++
					l.slowest = max(l.slowest, took)
					l.mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	return l
}

// TestStrictLimitExactUnderConcurrency: 3 edges with 16 concurrent clients
// each send 480 requests for one key; a limit of 100 on http_req_cnt admits
// exactly 100, and the same on http_req_rate(1h) for another key.
func TestStrictLimitExactUnderConcurrency(t *testing.T) {
	strictLimit(t, startRedis(t, "").url())
}

// TestStrictLimitOnRedisCluster runs the same over a Redis Cluster of three
// real redis-server masters.
func TestStrictLimitOnRedisCluster(t *testing.T) {
	strictLimit(t, startRedisCluster(t))
}

func strictLimit(t *testing.T, redisAddr string) {
	const limit = 100
	edges := startStrictEdges(t, 3, redisAddr, limit, time.Second)
	waitClusterFormed(t, edges)
	for _, path := range []string{"/cnt", "/rate"} {
		hour := time.Now().Truncate(time.Hour)
		l := runConcurrent(t, edges, path, "c"+path[1:], 16, 10, nil)
		t.Logf("%s: %d requests, 3 edges × 16 clients: %v, slowest %v", path, l.sent, l.codes, l.slowest)
		if l.codes[http.StatusOK]+l.codes[http.StatusTooManyRequests] != l.sent {
			t.Fatalf("%s: unexpected statuses %v", path, l.codes)
		}
		if path == "/rate" && !time.Now().Truncate(time.Hour).Equal(hour) {
			t.Logf("the run crossed an hour: the rate's previous window counts weighted, not checked")
			continue
		}
		if got := l.codes[http.StatusOK]; got != limit {
			t.Fatalf("%s: admitted %d, want exactly %d", path, got, limit)
		}
	}
	for _, e := range edges {
		waitFor(t, 5*time.Second, e.name+" reads http_req_cnt 480", func() bool {
			return e.value(t, "ccnt", "http_req_cnt") == 480
		})
	}
}

// TestStrictBanAtOnce: a ban set by stick_ban on one edge of a strict table
// refuses the very next request on every other edge.
func TestStrictBanAtOnce(t *testing.T) {
	edges := startStrictEdges(t, 3, startRedis(t, "").url(), 1000, time.Second)
	waitClusterFormed(t, edges)
	for i, e := range edges {
		id := "banned-by-" + e.name
		if code, _ := edges[(i+1)%3].get(t, "/", id); code != http.StatusOK {
			t.Fatalf("before the ban: %d", code)
		}
		if code, _ := e.get(t, "/ban", id); code != http.StatusForbidden {
			t.Fatalf("%s /ban: %d, want 403", e.name, code)
		}
		for _, other := range edges {
			if code, _ := other.get(t, "/", id); code != http.StatusForbidden {
				t.Errorf("ban set on %s: the next request on %s got %d, want 403", e.name, other.name, code)
			}
		}
	}
}

// TestStrictRedisOutage: Redis killed and restarted under 3 × 8 concurrent
// clients of a strict table (on_outage local): no request fails, none waits
// much longer than the timeout, and the edges count strictly again after.
func TestStrictRedisOutage(t *testing.T) {
	r := startRedis(t, "")
	edges := startStrictEdges(t, 3, r.url(), 1_000_000, 50*time.Millisecond)
	waitClusterFormed(t, edges)
	stop := make(chan struct{})
	done := make(chan *load)
	go func() { done <- runConcurrent(t, edges, "/cnt", "steady", 8, 0, stop) }()
	time.Sleep(300 * time.Millisecond)
	r.kill(t)
	waitFor(t, 2*time.Second, "outage metric", func() bool { return metric(t, edges[0], "rampart_cluster_outage") == "1" })
	time.Sleep(time.Second)
	r = startRedis(t, r.port)
	for _, e := range edges {
		waitFor(t, 5*time.Second, e.name+" reconnects", func() bool { return clusterState(t, e).Connected })
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	l := <-done
	t.Logf("%d requests through the outage, slowest %v", l.sent, l.slowest)
	if l.codes[http.StatusOK] != l.sent {
		t.Fatalf("requests during the outage: %v of %d", l.codes, l.sent)
	}
	// Generous: a request waits at most the 50ms timeout for Redis; the
	// rest is this loaded machine's scheduling.
	if l.slowest > time.Second {
		t.Errorf("a request waited %v with a 50ms timeout", l.slowest)
	}
	// Strict again: a fresh key counts exactly across the edges.
	l = runConcurrent(t, edges, "/cnt", "after", 4, 5, nil)
	if l.codes[http.StatusOK] != l.sent {
		t.Fatalf("after the outage: %v of %d", l.codes, l.sent)
	}
	for _, e := range edges {
		waitFor(t, 5*time.Second, e.name+" reads the count after the outage", func() bool {
			return e.value(t, "after", "http_req_cnt") == uint64(l.sent)
		})
	}
}

// TestAdminShowsEdgeShare: an entry of a shared table shows the
// cluster-wide values and, under "edge", what this edge counted itself.
func TestAdminShowsEdgeShare(t *testing.T) {
	edges := startEdges(t, 2, startRedis(t, "").url(), 1000, "local")
	waitClusterFormed(t, edges)
	// http_req_rate(10s) is exact only within one 10 s window: a read after
	// the next window starts weighs these requests by the part of the
	// period left. Start a second into a window (the tables' coarse clock
	// may still be in the previous one at its very start).
	time.Sleep(time.Duration((11_000-time.Now().UnixMilli()%10_000)%10_000) * time.Millisecond)
	for i, e := range edges {
		for range 3 + 2*i { // edge-1: 3 requests, edge-2: 5
			if code, _ := e.get(t, "/", "shared-key"); code != http.StatusOK {
				t.Fatalf("%s: %d", e.name, code)
			}
		}
	}
	for i, e := range edges {
		var entry struct {
			Values map[string]uint64 `json:"values"`
			Edge   map[string]uint64 `json:"edge"`
		}
		waitFor(t, 5*time.Second, e.name+" reads the cluster-wide count", func() bool {
			_, body := e.adminDo(t, http.MethodGet, "/stick-tables/per_client/shared-key", "")
			entry.Values, entry.Edge = nil, nil
			return json.Unmarshal([]byte(body), &entry) == nil && entry.Values["http_req_cnt"] == 8
		})
		own := uint64(3 + 2*i)
		if entry.Edge["http_req_cnt"] != own || entry.Edge["http_req_rate"] != own || entry.Values["http_req_rate"] != 8 {
			t.Errorf("%s: values %v, edge %v: want http_req_cnt and http_req_rate 8 cluster-wide, %d on this edge", e.name, entry.Values, entry.Edge, own)
		}
		if _, ok := entry.Edge["req_cur"]; !ok {
			t.Errorf("%s: edge share %v has no req_cur", e.name, entry.Edge)
		}
		if _, ok := entry.Edge["ban"]; ok {
			t.Errorf("%s: edge share %v has ban, which is not summed", e.name, entry.Edge)
		}
	}
}
