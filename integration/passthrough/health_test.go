package passthrough_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// TestHealthPerRoute: two routes share a backend address; one probes a
// closed health_port and takes the backend out of its own rotation. The
// other route probes the backend's real port: its state stays healthy and
// every connection through it reaches the backend.
func TestHealthPerRoute(t *testing.T) {
	b := startBackend(t, "shared", "")
	closed := harness.FreePort(t) // nothing listens there
	e := startEdge(t, fmt.Sprintf(`passthrough {
		pass.test %s {
			health_interval 50ms
			health_timeout 200ms
			health_port %d
		}
		a.tenant.test %s {
			health_interval 50ms
			health_timeout 200ms
		}
	}`, b.addr, closed, b.addr))
	down := `rampart_passthrough_upstream_healthy{route="pass.test",upstream="` + b.addr + `"} 0`
	eventually(t, 5*time.Second, "pass.test takes the backend out", func() error {
		if _, body := e.caddy.AdminRequest("GET", "/metrics", nil); !strings.Contains(body, down) {
			return fmt.Errorf("metrics lack %s", down)
		}
		return nil
	})
	up := `rampart_passthrough_upstream_healthy{route="a.tenant.test",upstream="` + b.addr + `"} 1`
	deadline := time.Now().Add(1500 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		if _, body := e.caddy.AdminRequest("GET", "/metrics", nil); !strings.Contains(body, up) {
			t.Fatalf("round %d: the other route's state changed: metrics lack %s", i, up)
		}
		s, err := openSession(e.https, "a.tenant.test")
		if err != nil {
			t.Fatalf("round %d: a.tenant.test, whose own checks pass: %v", i, err)
		}
		s.conn.Close()
		if s.backend != "shared" {
			t.Fatalf("round %d: reached %q", i, s.backend)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s, err := openSession(e.https, "pass.test"); err == nil {
		s.conn.Close()
		t.Fatal("pass.test, whose checks fail, still relayed a connection")
	}
}

// TestHealthCheckersEndWithConfig: the health checkers of a config stop
// when it is unloaded; across 50 reloads the goroutine count stays flat.
func TestHealthCheckersEndWithConfig(t *testing.T) {
	b1 := startBackend(t, "one", "")
	b2 := startBackend(t, "two", "")
	block := func(i int) string {
		return fmt.Sprintf(`passthrough {
		pass.test %s %s {
			health_interval %dms
			health_timeout 100ms
		}
		a.tenant.test %s {
			health_interval 20ms
		}
	}`, b1.addr, b2.addr, 20+i%2, b2.addr)
	}
	e := startEdge(t, block(0))
	settle := func() int {
		// a checker round in flight or a closing listener ends within
		// a few intervals; take the lowest of several samples
		n := 1 << 30
		for range 10 {
			time.Sleep(50 * time.Millisecond)
			n = min(n, runtime.NumGoroutine())
		}
		return n
	}
	for i := 1; i <= 5; i++ { // warm up: pools, the admin server
		e.reload(t, block(i))
	}
	before := settle()
	for i := 6; i < 56; i++ {
		e.reload(t, block(i))
	}
	waitBackend(t, e.https, "a.tenant.test", "two")
	after := settle()
	if after > before+5 {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("goroutines %d before 50 reloads, %d after\n%s", before, after, buf[:n])
	}
	t.Logf("goroutines %d before 50 reloads, %d after", before, after)
}

// TestConnectionCountsSurviveReload: least_conn sees the connections that a
// config before the reload still relays (the backend's load is the
// backend's, not one config's): three connections held on one backend send
// the next three, after a reload to least_conn, to the other.
func TestConnectionCountsSurviveReload(t *testing.T) {
	b1 := startBackend(t, "one", "")
	b2 := startBackend(t, "two", "")
	block := func(policy string) string {
		return fmt.Sprintf("passthrough {\n\t\tpass.test %s %s {\n\t\t\tlb_policy %s\n\t\t}\n\t}", b1.addr, b2.addr, policy)
	}
	e := startEdge(t, block("first"))
	var held []*session
	defer func() {
		for _, s := range held {
			s.conn.Close()
		}
	}()
	for range 3 {
		s, err := openSession(e.https, "pass.test")
		if err != nil {
			t.Fatal(err)
		}
		if s.backend != "one" {
			t.Fatalf("lb_policy first reached %q", s.backend)
		}
		held = append(held, s)
	}
	e.reload(t, block("least_conn"))
	for i := range 3 {
		s, err := openSession(e.https, "pass.test")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, s)
		if s.backend != "two" {
			t.Fatalf("connection %d after the reload reached %q with three connections still on one", i+1, s.backend)
		}
	}
	for i, s := range held {
		if err := s.echo("still relayed"); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
	}
}
