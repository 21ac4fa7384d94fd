package hideorigin_test

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
	"github.com/rampart-edge/caddy-rampart/modules/hideorigin/sign"
)

// replayOrigins runs two origin instances with origin_lock. Their local
// replay caches are distinct (different capacities are different pool
// entries, as two processes would have); mode is the replay_cache cluster
// line for both ("" for none). It returns their addresses and the Caddy.
func replayOrigins(t *testing.T, redisAddr, mode string) (string, string, *harness.Caddy) {
	t.Helper()
	pa, pb := harness.FreePort(t), harness.FreePort(t)
	a, b := fmt.Sprintf("127.0.0.1:%d", pa), fmt.Sprintf("127.0.0.1:%d", pb)
	// Any Host: the replayed request keeps the signed Host header.
	site := func(port, capacity int) string {
		return fmt.Sprintf(`http://:%d {
	bind 127.0.0.1
	origin_lock {
		key %s
		replay_cache %d
		%s
	}
	respond "inside" 200
}
`, port, edgeKey, capacity, mode)
	}
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	auto_https off
	stick_cluster {
		redis redis://%s/0
		node origin
		timeout 100ms
	}
}
%s
%s`, redisAddr, site(pa, 1000), site(pb, 1001)))
	harness.WaitListening(t, a, 10*time.Second)
	harness.WaitListening(t, b, 10*time.Second)
	return a, b, c
}

// signedGet sends one request with the header to addr and returns its status.
func signedGet(t *testing.T, addr, header string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	req.Host = "localhost"
	req.Header.Set(sign.Header, header)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func newSignature(t *testing.T) string {
	t.Helper()
	key, err := sign.NewKey(edgeKey)
	if err != nil {
		t.Fatal(err)
	}
	return key.Sign(sign.Signed{Method: "GET", Host: "localhost", URI: "/", ClientIP: netip.MustParseAddr("203.0.113.9"), Time: time.Now()})
}

// TestOriginLockReplayCluster: with `replay_cache cluster` a signed request
// replayed to another origin instance is refused; without it (the control)
// it is admitted.
func TestOriginLockReplayCluster(t *testing.T) {
	redisAddr, _ := harness.StartRedis(t)
	for _, tc := range []struct {
		mode       string
		wantReplay int
	}{
		{"", http.StatusOK},                                 // local caches only: the other instance admits it
		{"replay_cache cluster", http.StatusForbidden},      // shared: refused
		{"replay_cache cluster deny", http.StatusForbidden}, // shared, deny on outage: refused too
	} {
		t.Run(tc.mode, func(t *testing.T) { checkReplayCluster(t, redisAddr, tc.mode, tc.wantReplay) })
	}
}

// checkReplayCluster sends one signature to an instance twice, then to the
// other.
func checkReplayCluster(t *testing.T, redisAddr, mode string, wantReplay int) {
	a, b, _ := replayOrigins(t, redisAddr, mode)
	h := newSignature(t)
	if got := signedGet(t, a, h); got != http.StatusOK {
		t.Fatalf("%q: first use of a signature: %d", mode, got)
	}
	if got := signedGet(t, a, h); got != http.StatusForbidden {
		t.Fatalf("%q: replay to the same instance: %d", mode, got)
	}
	if got := signedGet(t, b, h); got != wantReplay {
		t.Fatalf("%q: replay to the other instance: %d, want %d", mode, got, wantReplay)
	}
}

// TestOriginLockReplayClusterOutage: with Redis stopped, `local` admits
// fresh requests with the local cache (still refusing replays to the same
// instance) and says so in the metrics; `deny` refuses them. Neither waits
// long.
func TestOriginLockReplayClusterOutage(t *testing.T) {
	for _, tc := range []struct {
		mode      string
		wantFresh int
	}{
		{"replay_cache cluster local", http.StatusOK},
		{"replay_cache cluster deny", http.StatusForbidden},
	} {
		t.Run(tc.mode, func(t *testing.T) { checkReplayOutage(t, tc.mode, tc.wantFresh) })
	}
}

// checkReplayOutage kills Redis under an origin instance.
func checkReplayOutage(t *testing.T, mode string, wantFresh int) {
	redisAddr, redis := harness.StartRedis(t)
	a, _, c := replayOrigins(t, redisAddr, mode)
	if got := signedGet(t, a, newSignature(t)); got != http.StatusOK {
		t.Fatalf("%q: with Redis up: %d", mode, got)
	}
	harness.KillRedis(t, redis, redisAddr)
	start := time.Now()
	for range 5 {
		h := newSignature(t)
		if got := signedGet(t, a, h); got != wantFresh {
			t.Fatalf("%q: fresh request with Redis down: %d, want %d", mode, got, wantFresh)
		}
		if got := signedGet(t, a, h); got != http.StatusForbidden {
			t.Fatalf("%q: replay to the same instance with Redis down: %d", mode, got)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("%q: ten requests with Redis down took %s", mode, took)
	}
	_, metrics := c.AdminRequest(http.MethodGet, "/metrics", nil)
	if !strings.Contains(metrics, "rampart_origin_lock_replay_cluster_outage 1") {
		t.Fatalf("%q: outage gauge is not 1", mode)
	}
	want := "rampart_origin_lock_replay_cluster_unshared_total"
	if mode == "replay_cache cluster deny" {
		want = `rampart_origin_lock_requests_total{result="cluster_unavailable"}`
	}
	if !strings.Contains(metrics, want) {
		t.Fatalf("%q: no %s in /metrics", mode, want)
	}
}
