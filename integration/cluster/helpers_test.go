// Package cluster_test runs three real Rampart edges (the binary built from
// xcaddy.json, one config per process as Caddy runs them) against real
// redis-server processes and checks the cluster-wide stick tables.
package cluster_test

import (
	"encoding/json"
	"fmt"
	"io"
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

// syncEvery is the edges' sync interval in these tests.
const syncEvery = 100 * time.Millisecond

// redisServer is a redis-server without persistence on a loopback port.
type redisServer struct {
	port string
	proc *harness.Process
}

func (r *redisServer) url() string { return "redis://127.0.0.1:" + r.port + "/0" }

// startRedis runs a redis-server on port (a free one when empty).
func startRedis(t *testing.T, port string) *redisServer {
	t.Helper()
	bin := harness.Peer(t, "redis-server", "redis-server")
	if port == "" {
		port = strconv.Itoa(harness.FreePort(t))
	}
	p := harness.Start(t, "127.0.0.1:"+port, bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--enable-debug-command", "local")
	return &redisServer{port: port, proc: p}
}

// startRedisCluster runs three redis-server masters on loopback ports,
// joins them with redis-cli --cluster create and returns the edges' `redis`
// arguments (every master as a seed).
func startRedisCluster(t *testing.T) string {
	t.Helper()
	bin := harness.Peer(t, "redis-server", "redis-server")
	cli := harness.Peer(t, "redis-cli", "redis-tools")
	dir := t.TempDir()
	var addrs, urls []string
	for i := range 3 {
		// the cluster bus port is port+10000 unless set: that may be in the
		// ephemeral range or taken, so it is a free port of its own
		port, bus := strconv.Itoa(harness.FreePort(t)), strconv.Itoa(harness.FreePort(t))
		harness.Start(t, "127.0.0.1:"+port, bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--cluster-enabled", "yes", "--cluster-port", bus, "--cluster-config-file", filepath.Join(dir, "nodes-"+strconv.Itoa(i)+".conf"), "--dir", dir)
		addrs = append(addrs, "127.0.0.1:"+port)
		urls = append(urls, "redis://127.0.0.1:"+port)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range addrs {
		host, port, _ := strings.Cut(a, ":")
		waitFor(t, 20*time.Second, "cluster state ok on "+a, func() bool {
			out, _ := exec.Command(cli, "-h", host, "-p", port, "cluster", "info").Output()
			return strings.Contains(string(out), "cluster_state:ok")
		})
	}
	return strings.Join(urls, " ")
}

// kill stops the server at once, as a crash would.
func (r *redisServer) kill(t *testing.T) {
	t.Helper()
	if err := r.proc.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_, _ = r.proc.Cmd.Process.Wait()
}

// edge is one running Rampart binary.
type edge struct {
	name  string
	addr  string // HTTP site
	admin string
	proc  *harness.Process
}

// edgeConfig is the Caddyfile of every edge: a shared table counting per
// X-Client, a limit of `limit` requests, a /ban path that bans the caller.
const edgeConfig = `{
	admin 127.0.0.1:%[1]s
	log {
		level WARN
	}
	stick_cluster {
		redis %[3]s
		node %[4]s
		sync %[5]s
		timeout 50ms
		on_outage %[6]s
	}
	stick_table per_client {
		type string
		size 100k
		expire 10m
		store http_req_cnt http_req_rate(10s) req_cur gpc(1) ban
		shared
	}
}

http://127.0.0.1:%[2]s {
	track per_client {header.X-Client}
	@banned stick per_client banned
	@over stick per_client http_req_cnt gt %[7]d
	@banme path /ban
	stick_ban @banme per_client 10m
	handle /hold {
		reverse_proxy %[8]s
	}
	respond @banned "banned" 403
	respond @over "over" 429
	respond "ok {http.stick.per_client.http_req_cnt}"
}
`

// startEdges runs n edges against redisURL with a limit of limit requests.
func startEdges(t *testing.T, n int, redisURL string, limit int, onOutage string) []*edge {
	return startEdgesWithOrigin(t, n, redisURL, limit, onOutage, "127.0.0.1:9")
}

// startEdgesWithOrigin also proxies /hold to origin.
func startEdgesWithOrigin(t *testing.T, n int, redisURL string, limit int, onOutage, origin string) []*edge {
	t.Helper()
	bin := harness.BuildCaddy(t)
	edges := make([]*edge, n)
	for i := range edges {
		e, port, admin := newEdge(t, i)
		e.proc = runEdge(t, bin, fmt.Sprintf(edgeConfig, admin, port, redisURL, e.name, syncEvery, onOutage, limit, origin), e.addr)
		edges[i] = e
	}
	return edges
}

// newEdge names the i-th edge and picks its HTTP and admin ports.
func newEdge(t *testing.T, i int) (e *edge, port, admin string) {
	port, admin = strconv.Itoa(harness.FreePort(t)), strconv.Itoa(harness.FreePort(t))
	return &edge{name: fmt.Sprintf("edge-%d", i+1), addr: "127.0.0.1:" + port, admin: "127.0.0.1:" + admin}, port, admin
}

// runEdge runs the Rampart binary on the Caddyfile cfg until the test ends,
// once addr accepts connections.
func runEdge(t *testing.T, bin, cfg, addr string) *harness.Process {
	t.Helper()
	file := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return harness.Start(t, addr, bin, "run", "--config", file, "--adapter", "caddyfile")
}

var client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

// get sends one request as clientID and returns the status and latency.
func (e *edge) get(t *testing.T, path, clientID string) (int, time.Duration) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+e.addr+path, nil)
	req.Header.Set("X-Client", clientID)
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("%s: %v", e.name, err)
		return 0, time.Since(start)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, time.Since(start)
}

// adminDo calls the edge's admin API.
func (e *edge) adminDo(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+e.admin+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s admin %s %s: %v", e.name, method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// value reads one value of an entry through the edge's admin API (0 when
// the edge has no entry).
func (e *edge) value(t *testing.T, key, name string) uint64 {
	t.Helper()
	code, body := e.adminDo(t, http.MethodGet, "/stick-tables/per_client/"+key, "")
	if code == http.StatusNotFound {
		return 0
	}
	var entry struct {
		Values map[string]uint64 `json:"values"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &entry) != nil {
		t.Fatalf("%s: GET entry %s: %d %s", e.name, key, code, body)
	}
	return entry.Values[name]
}

// waitFor polls cond every 10ms until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}
