package stats_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// tlsBackend is a TLS server that greets each connection with its id and
// echoes lines; it counts the connections it accepted.
type tlsBackend struct {
	id, addr string
	mu       sync.Mutex
	accepted int
}

func startTLSBackend(t testing.TB, id string) *tlsBackend {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{harness.SelfSigned(t, "stats backend", "pass.test").TLS}})
	if err != nil {
		t.Fatal(err)
	}
	b := &tlsBackend{id: id, addr: ln.Addr().String()}
	t.Cleanup(func() { ln.Close() })
	go harness.ServeEach(ln, func(c net.Conn) {
		b.mu.Lock()
		b.accepted++
		b.mu.Unlock()
		if _, err := fmt.Fprintf(c, "backend=%s\n", id); err == nil {
			_, _ = io.Copy(c, c)
		}
	})
	return b
}

func (b *tlsBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.accepted
}

// tlsSession is a long-lived client connection through the edge.
type tlsSession struct {
	conn    *tls.Conn
	r       *bufio.Reader
	backend string
}

func openTLS(addr string) (*tlsSession, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, &tls.Config{ServerName: "pass.test", InsecureSkipVerify: true}) //nolint:gosec // the backend's own self-signed certificate
	if err != nil {
		return nil, err
	}
	s := &tlsSession{conn: c, r: bufio.NewReader(c)}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := s.r.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, err
	}
	s.backend = strings.TrimPrefix(strings.TrimSpace(line), "backend=")
	return s, nil
}

func (s *tlsSession) echo(msg string) error {
	_ = s.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintln(s.conn, msg); err != nil {
		return err
	}
	got, err := s.r.ReadString('\n')
	if err == nil && strings.TrimSpace(got) != msg {
		err = fmt.Errorf("echo %q came back as %q", msg, got)
	}
	return err
}

// TestPassthroughDrain: long-lived TLS connections through a passthrough
// route keep working while their upstream is drained and then in
// maintenance; new connections go to the other upstream; after ready they
// reach it again. No connection fails.
func TestPassthroughDrain(t *testing.T) {
	b1, b2 := startTLSBackend(t, "b1"), startTLSBackend(t, "b2")
	httpsPort := harness.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", httpsPort)
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	http_port %d
	https_port %d
	local_certs
	passthrough {
		pass.test %s %s
	}
}

site.test {
	respond "terminated"
}
`, harness.FreePort(t), httpsPort, b1.addr, b2.addr))
	harness.WaitListening(t, addr, 10*time.Second)
	t.Cleanup(func() {
		c.AdminRequest("PUT", "/rampart/upstreams/"+b1.addr, strings.NewReader(`{"state":"ready"}`))
	})
	waitFor(t, 15*time.Second, "site.test's certificate", func() bool { // issuance must end before the storage goes
		conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "site.test", InsecureSkipVerify: true}) //nolint:gosec // only the issuer is looked at
		if err != nil {
			return false
		}
		defer conn.Close()
		certs := conn.ConnectionState().PeerCertificates
		return len(certs) > 0 && strings.Contains(certs[0].Issuer.CommonName+strings.Join(certs[0].Issuer.Organization, ","), "Caddy")
	})

	var long []*tlsSession
	onB1 := 0
	for range 6 {
		s, err := openTLS(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer s.conn.Close()
		long = append(long, s)
		if s.backend == "b1" {
			onB1++
		}
	}
	if onB1 == 0 || onB1 == len(long) {
		t.Fatalf("%d of %d sessions on b1: want both backends used", onB1, len(long))
	}
	echoAll := func(phase string) {
		t.Helper()
		for i, s := range long {
			if err := s.echo(fmt.Sprintf("%s %d", phase, i)); err != nil {
				t.Errorf("%s: long-lived session %d (on %s) failed: %v", phase, i, s.backend, err)
			}
		}
	}
	newOnlyOn := func(phase, want string) {
		t.Helper()
		for range 8 {
			s, err := openTLS(addr)
			if err != nil {
				t.Errorf("%s: new connection failed: %v", phase, err)
				continue
			}
			if s.backend != want {
				t.Errorf("%s: a new connection reached %s, want %s", phase, s.backend, want)
			}
			s.conn.Close()
		}
	}

	setState(t, c, b1.addr, "drain")
	before := b1.count()
	newOnlyOn("drain", "b2")
	echoAll("drain")
	row := func() (string, bool, int64) {
		for _, u := range stats(t, c).Upstreams {
			if u.Kind == "passthrough" && u.Address == b1.addr {
				return u.State, u.Healthy, u.Current
			}
		}
		t.Fatal("b1 is not on the page")
		return "", false, 0
	}
	if state, healthy, current := row(); state != "drain" || !healthy || current != int64(onB1) {
		t.Errorf("b1 draining: %s healthy=%v current=%d, want drain, healthy, %d", state, healthy, current, onB1)
	}

	setState(t, c, b1.addr, "maint")
	newOnlyOn("maint", "b2")
	echoAll("maint")
	if state, healthy, _ := row(); state != "maint" || healthy {
		t.Errorf("b1 in maintenance: %s healthy=%v, want maint, not healthy", state, healthy)
	}
	if got := b1.count(); got != before {
		t.Errorf("b1 accepted %d new connections while drained or in maintenance", got-before)
	}

	setState(t, c, b1.addr, "ready")
	reached := false
	for range 8 {
		s, err := openTLS(addr)
		if err != nil {
			t.Fatalf("after ready: %v", err)
		}
		reached = reached || s.backend == "b1"
		s.conn.Close()
	}
	if !reached {
		t.Error("after ready, no new connection reached b1")
	}
	echoAll("ready")
}

// TestPassthroughCheckFigures: a passthrough route's health checks show on
// the page, in the JSON and the CSV: the last check's time and result, the
// consecutive and the total failed checks, for a live backend and for an
// address nothing listens on.
func TestPassthroughCheckFigures(t *testing.T) {
	live := startTLSBackend(t, "live")
	dead := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	httpsPort := harness.FreePort(t)
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	http_port %d
	https_port %d
	local_certs
	passthrough {
		pass.test %s %s {
			health_interval 100ms
			health_timeout 1s
			health_fails 2
		}
	}
}

site.test {
	respond "terminated"
}
`, harness.FreePort(t), httpsPort, live.addr, dead))
	harness.WaitListening(t, fmt.Sprintf("127.0.0.1:%d", httpsPort), 10*time.Second)
	started := time.Now()
	waitFor(t, 10*time.Second, "three failed checks of the dead address", func() bool {
		for _, u := range stats(t, c).Upstreams {
			if u.Address == dead && u.Checks != nil && u.Checks.FailsTotal >= 3 {
				return true
			}
		}
		return false
	})
	for _, u := range stats(t, c).Upstreams {
		if u.Kind != "passthrough" {
			continue
		}
		ch := u.Checks
		switch {
		case ch == nil || ch.LastAt == nil || ch.LastAt.Before(started.Add(-time.Second)):
			t.Errorf("%s: checks %+v, want a recent last check", u.Address, ch)
		case u.Address == live.addr && (!ch.LastOK || ch.Fails != 0 || ch.FailsTotal != 0 || !u.Healthy):
			t.Errorf("live backend: %+v healthy=%v, want ok, no fails, healthy", *ch, u.Healthy)
		case u.Address == dead && (ch.LastOK || ch.Fails < 3 || ch.Fails != int64(ch.FailsTotal) || u.Healthy):
			t.Errorf("dead address: %+v healthy=%v, want failed, consecutive = total >= 3, down", *ch, u.Healthy)
		}
	}
	_, csv := c.AdminRequest(http.MethodGet, "/rampart/stats.csv", nil)
	found := false
	for _, line := range strings.Split(csv, "\n") {
		if strings.HasPrefix(line, "upstream,passthrough,") && strings.Contains(line, ","+dead+",ready,false,") {
			found = true
			cells := strings.Split(line, ",")
			if last := cells[len(cells)-5:]; last[1] == "" || last[2] != "false" || last[3] == "0" || last[4] == "0" {
				t.Errorf("CSV check cells of the dead address: %q", last)
			}
		}
	}
	if !found {
		t.Errorf("no CSV row for the dead address:\n%s", csv)
	}
}
