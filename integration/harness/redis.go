package harness

import (
	"fmt"
	"testing"
)

// StartRedis runs a redis-server on a free loopback port, without
// persistence, until the test ends, and returns its address (host:port).
// Stop it early with the returned Process (Cmd.Process.Kill) to test an
// outage.
func StartRedis(t testing.TB) (string, *Process) {
	t.Helper()
	bin := Peer(t, "redis-server", "redis-server")
	port := FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p := Start(t, addr, bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	return addr, p
}
