package harness

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// StartRedis runs a redis-server on a free loopback port, without
// persistence, until the test ends, and returns its address (host:port).
// KillRedis stops it early to test an outage.
func StartRedis(t testing.TB) (string, *Process) {
	t.Helper()
	bin := Peer(t, "redis-server", "redis-server")
	port := FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p := Start(t, addr, bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	return addr, p
}

// KillRedis kills a redis-server started by StartRedis and waits until addr
// refuses connections.
func KillRedis(t testing.TB, p *Process, addr string) {
	t.Helper()
	if err := p.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
	}
	t.Fatalf("redis-server on %s still accepts connections after kill", addr)
}
