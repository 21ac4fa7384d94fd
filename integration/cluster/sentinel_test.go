package cluster_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// sentinelMaster is the master's name the Sentinels monitor.
const sentinelMaster = "rampart"

// sentinelSetup is a Redis master, its replica and two Sentinels on
// loopback ports.
type sentinelSetup struct {
	master, replica string   // ports
	sentinels       []string // ports
}

// redisCLI runs redis-cli against 127.0.0.1:port and returns its output.
func redisCLI(t *testing.T, port string, args ...string) string {
	t.Helper()
	cli := harness.Peer(t, "redis-cli", "redis-tools")
	out, err := exec.Command(cli, append([]string{"-h", "127.0.0.1", "-p", port}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli -p %s %v: %v\n%s", port, args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// startSentinels runs a master, a replica of it and two Sentinels (quorum
// 1, so that either can fail over alone) that both know the replica.
// Sentinels are redis-server in sentinel mode: Debian's redis-server has it.
func startSentinels(t *testing.T) *sentinelSetup {
	t.Helper()
	bin := harness.Peer(t, "redis-server", "redis-server")
	s := &sentinelSetup{master: strconv.Itoa(harness.FreePort(t)), replica: strconv.Itoa(harness.FreePort(t))}
	base := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}
	harness.Start(t, "127.0.0.1:"+s.master, bin, append([]string{"--port", s.master, "--dir", t.TempDir()}, base...)...)
	harness.Start(t, "127.0.0.1:"+s.replica, bin, append([]string{"--port", s.replica, "--dir", t.TempDir(),
		"--replicaof", "127.0.0.1", s.master}, base...)...)
	waitFor(t, 20*time.Second, "replica linked to the master", func() bool {
		return strings.Contains(redisCLI(t, s.replica, "INFO", "replication"), "master_link_status:up")
	})
	for range 2 {
		port := strconv.Itoa(harness.FreePort(t))
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf") // Sentinel rewrites it: a file of its own
		text := fmt.Sprintf("port %s\nbind 127.0.0.1\ndir %s\nsentinel monitor %s 127.0.0.1 %s 1\n"+
			"sentinel down-after-milliseconds %[3]s 1000\nsentinel failover-timeout %[3]s 10000\n", port, dir, sentinelMaster, s.master)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		harness.Start(t, "127.0.0.1:"+port, bin, conf, "--sentinel")
		s.sentinels = append(s.sentinels, port)
	}
	for _, p := range s.sentinels {
		waitFor(t, 20*time.Second, "Sentinel "+p+" knows the replica", func() bool {
			return strings.Contains(redisCLI(t, p, "SENTINEL", "REPLICAS", sentinelMaster), s.replica)
		})
	}
	return s
}

// redisArgs is the edges' `redis` line for the Sentinels.
func (s *sentinelSetup) redisArgs() string {
	args := "sentinel " + sentinelMaster
	for _, p := range s.sentinels {
		args += " redis://127.0.0.1:" + p
	}
	return args
}

// masterPort is the master's port as the first Sentinel reports it.
func (s *sentinelSetup) masterPort(t *testing.T) string {
	t.Helper()
	addr := strings.Fields(redisCLI(t, s.sentinels[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", sentinelMaster))
	if len(addr) != 2 {
		t.Fatalf("SENTINEL GET-MASTER-ADDR-BY-NAME: %v", addr)
	}
	return addr[1]
}

// TestSentinelLimitAndFailover: three edges reach Redis through two
// Sentinels (`redis sentinel <master> <url>...`). A client spreading its
// requests over them gets one limit, within the async bound; then a
// SENTINEL FAILOVER promotes the replica while the client keeps sending:
// no request fails, the edges follow the new master, and the count goes on
// from where it was.
func TestSentinelLimitAndFailover(t *testing.T) {
	s := startSentinels(t)
	const limit = 60
	edges := startEdges(t, 3, s.redisArgs(), limit, "local")
	waitClusterFormed(t, edges)

	l := runLoad(t, edges, "spread", 100, 5*time.Millisecond, nil)
	admitted, window := l.codes[http.StatusOK], busiest(l.times, syncEvery+pullDelay)
	t.Logf("through Sentinel: sent %d over 3 edges, admitted %d for a limit of %d; bound %d", l.sent, admitted, limit, limit+window)
	if l.codes[http.StatusOK]+l.codes[http.StatusTooManyRequests] != l.sent || admitted < limit || admitted > limit+window {
		t.Fatalf("statuses %v, want %d..%d admitted and the rest 429", l.codes, limit, limit+window)
	}

	// Failover under load: the key is over its limit, so 429 is the
	// expected answer; anything else (or a transport error) is a failure.
	stop, done := make(chan struct{}), make(chan *load)
	go func() { done <- runLoad(t, edges, "failover", 0, 5*time.Millisecond, stop) }()
	time.Sleep(500 * time.Millisecond)
	var before uint64
	for _, e := range edges {
		before = max(before, e.value(t, "failover", "http_req_cnt"))
	}
	if got := redisCLI(t, s.sentinels[0], "SENTINEL", "FAILOVER", sentinelMaster); got != "OK" {
		t.Fatalf("SENTINEL FAILOVER: %s", got)
	}
	started := time.Now()
	waitFor(t, 20*time.Second, "the Sentinels promote the replica", func() bool { return s.masterPort(t) == s.replica })
	promoted := time.Since(started)
	for _, e := range edges {
		waitFor(t, 10*time.Second, e.name+" syncs with the new master", func() bool {
			st := clusterState(t, e)
			last, err := time.Parse(time.RFC3339Nano, st.LastSync)
			return err == nil && st.Connected && last.After(started.Add(promoted))
		})
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	l = <-done
	if l.codes[http.StatusOK]+l.codes[http.StatusTooManyRequests] != l.sent {
		t.Fatalf("requests during the failover: %v of %d", l.codes, l.sent)
	}
	var counted uint64
	waitFor(t, 5*time.Second, "every edge reads the same count after the failover", func() bool {
		counted = edges[0].value(t, "failover", "http_req_cnt")
		return edges[1].value(t, "failover", "http_req_cnt") == counted && edges[2].value(t, "failover", "http_req_cnt") == counted
	})
	t.Logf("%d requests through a Sentinel failover (replica promoted after %v), slowest %v; the cluster counted %d (%d before the failover)",
		l.sent, promoted.Round(time.Millisecond), l.slowest, counted, before)
	if counted > uint64(l.sent) || counted < before {
		t.Fatalf("count %d after the failover, want %d..%d", counted, before, l.sent)
	}
	if !strings.Contains(redisCLI(t, s.replica, "INFO", "replication"), "role:master") {
		t.Fatal("the promoted replica is not a master")
	}

	// The count continues on the new master: every edge reads what it
	// holds, which has every later request. A batch an edge could not
	// confirm during the switch (a timeout, a read-only old master) is
	// resent with its batch number and lands on the new master once, so
	// the count may grow past counted + more, never past what was sent.
	more := runLoad(t, edges, "failover", 10, 5*time.Millisecond, nil)
	sent := uint64(l.sent + more.sent)
	var final uint64
	waitFor(t, 5*time.Second, "every edge reads the new master's count", func() bool {
		n, _ := strconv.ParseUint(redisCLI(t, s.replica, "HGET", "rampart:per_client:{failover}", "http_req_cnt"), 10, 64)
		final = n
		for _, e := range edges {
			if e.value(t, "failover", "http_req_cnt") != n {
				return false
			}
		}
		return n >= counted+uint64(more.sent)
	})
	if final > sent {
		t.Fatalf("the new master holds http_req_cnt %d, more than the %d requests sent", final, sent)
	}
	t.Logf("after the failover: %d more requests, the new master and every edge read %d (%d counted before them)", more.sent, final, counted)
}
