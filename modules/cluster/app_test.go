package cluster_test

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
	. "github.com/rampart-edge/caddy-rampart/modules/cluster"
)

// startRedis runs a redis-server without persistence on a free loopback
// port until the test ends and returns its redis:// URL.
func startRedis(t *testing.T) string {
	t.Helper()
	bin := harness.Peer(t, "redis-server", "redis-server")
	port := strconv.Itoa(harness.FreePort(t))
	harness.Start(t, "127.0.0.1:"+port, bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	return "redis://127.0.0.1:" + port + "/0"
}

func TestAppDefaultsAndClient(t *testing.T) {
	url := startRedis(t)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	a := &App{RedisConfig: RedisConfig{Addresses: []string{url}}}
	if err := a.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Cleanup()
	host, _ := os.Hostname()
	if a.Node() != host || time.Duration(a.Sync) != 100*time.Millisecond ||
		time.Duration(a.Timeout) != 50*time.Millisecond || a.OnOutage != OutageLocal {
		t.Fatalf("defaults: node %q sync %v timeout %v on_outage %q", a.Node(), a.Sync, a.Timeout, a.OnOutage)
	}
	if err := a.Redis().Set(context.Background(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := a.Redis().Get(context.Background(), "k").Result(); err != nil || v != "v" {
		t.Fatalf("get: %q %v", v, err)
	}
}

func TestAppTimeoutBoundsAnOperation(t *testing.T) {
	url := startRedis(t)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	a := &App{RedisConfig: RedisConfig{Addresses: []string{url}}, NodeID: "e1"}
	if err := a.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Cleanup()
	if err := a.Redis().Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	cli := exec.Command(harness.Peer(t, "redis-cli", "redis-tools"), "-u", url, "DEBUG", "SLEEP", "1")
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	defer cli.Wait()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	err := a.Redis().Get(context.Background(), "k").Err()
	if took := time.Since(start); err == nil || took > 500*time.Millisecond {
		t.Fatalf("GET during DEBUG SLEEP: err %v after %v, want a timeout after about 50ms", err, took)
	}
}

func TestAppUnmarshalErrors(t *testing.T) {
	for _, tc := range []struct{ input, want string }{
		{"stick_cluster {\n node e1\n}", "missing redis address"},
		{"stick_cluster {\n redis redis://127.0.0.1\n sync 0s\n}", `sync "0s"`},
		{"stick_cluster {\n redis redis://127.0.0.1\n on_outage maybe\n}", `on_outage "maybe"`},
		{"stick_cluster {\n redis redis://127.0.0.1\n node a:b\n}", `node "a:b"`},
		{"stick_cluster {\n redis redis://127.0.0.1\n colour red\n}", `unknown option "colour"`},
		{"stick_cluster {\n redis redis://127.0.0.1\n timeout 1s 2s\n}", "timeout takes one argument"},
	} {
		var a App
		err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.input, err, tc.want)
		}
	}
}
