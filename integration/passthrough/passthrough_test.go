package passthrough_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/rampart-edge/caddy-rampart"
	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// edge is an in-process Caddy with passthrough and a terminated site on
// one HTTPS port.
type edge struct {
	caddy *harness.Caddy
	https string // 127.0.0.1:port
	http  int
}

const defaultSite = `site.test {
	respond "terminated by the edge"
}`

func edgeCaddyfile(httpPort, httpsPort int, passthroughBlock, site string) string {
	return fmt.Sprintf(`{
	http_port %d
	https_port %d
	local_certs
	%s
}

%s
`, httpPort, httpsPort, passthroughBlock, site)
}

// startEdge starts an edge with the default site and waits for the site's
// certificate: issuance writes to the storage directory, which must be
// finished before the test removes it.
func startEdge(t *testing.T, passthroughBlock string) *edge {
	t.Helper()
	e := startEdgeWith(t, passthroughBlock, defaultSite)
	e.waitSiteCert(t)
	return e
}

// waitSiteCert waits until site.test presents Caddy's certificate.
func (e *edge) waitSiteCert(t *testing.T) {
	t.Helper()
	eventually(t, 15*time.Second, "site.test certificate", func() error {
		c, err := dialTLS(e.https, "site.test")
		if err != nil {
			return err
		}
		defer c.Close()
		if org := peerOrg(c); !strings.Contains(org, "Caddy") {
			return fmt.Errorf("site.test certificate issued by %q, want Caddy's local CA", org)
		}
		return nil
	})
}

func startEdgeWith(t *testing.T, passthroughBlock, site string) *edge {
	t.Helper()
	e := &edge{http: harness.FreePort(t)}
	port := harness.FreePort(t)
	e.https = fmt.Sprintf("127.0.0.1:%d", port)
	e.caddy = harness.RunCaddyfile(t, edgeCaddyfile(e.http, port, passthroughBlock, site))
	harness.WaitListening(t, e.https, 10*time.Second)
	return e
}

// metricValue returns the value of one series in a Prometheus text body
// (0 when absent).
func metricValue(body, series string) float64 {
	for line := range strings.SplitSeq(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return 0
}

func (e *edge) reload(t *testing.T, passthroughBlock string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(e.https)
	var p int
	fmt.Sscan(port, &p)
	e.caddy.Reload(edgeCaddyfile(e.http, p, passthroughBlock, defaultSite))
}

// TestSharedPort: passthrough names reach their backends with the
// backends' own certificates (exact, wildcard and regexp names, load
// spread), Caddy terminates its own site on the same port, and a
// connection that is not TLS is closed without an answer.
func TestSharedPort(t *testing.T) {
	b1 := startBackend(t, "one", "")
	b2 := startBackend(t, "two", "")
	b3 := startBackend(t, "three", "")
	e := startEdge(t, fmt.Sprintf(`passthrough {
		pass.test %s %s {
			name shared-port
		}
		*.tenant.test %s
		~^api-[0-9]+\.test$ %s
	}`, b1.addr, b2.addr, b3.addr, b3.addr))

	// Caddy's own site: Caddy's certificate (local CA), Caddy's answer
	eventually(t, 15*time.Second, "terminated site", func() error {
		c, err := dialTLS(e.https, "site.test", "http/1.1")
		if err != nil {
			return err
		}
		defer c.Close()
		if org := peerOrg(c); !strings.Contains(org, "Caddy") {
			return fmt.Errorf("site.test certificate issued by %q, want Caddy's local CA", org)
		}
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
		body, _ := io.ReadAll(c)
		if !strings.Contains(string(body), "terminated by the edge") {
			return fmt.Errorf("site.test answered %q", body)
		}
		return nil
	})

	// passthrough: the backend's own certificate, load spread over both
	const connsSeries = `rampart_passthrough_connections_total{route="shared-port"}`
	_, before := e.caddy.AdminRequest("GET", "/metrics", nil)
	seen := map[string]int{}
	for range 8 {
		s, err := openSession(e.https, "pass.test")
		if err != nil {
			t.Fatal(err)
		}
		if org := peerOrg(s.conn); !strings.Contains(org, "passthrough backend") {
			t.Fatalf("pass.test certificate issued by %q, want the backend's own", org)
		}
		if err := s.echo("hello through"); err != nil {
			t.Fatal(err)
		}
		seen[s.backend]++
		s.conn.Close()
	}
	if seen["one"] != 4 || seen["two"] != 4 {
		t.Fatalf("round robin spread %v, want 4 and 4", seen)
	}
	// per-route metrics, labelled with the route from the config
	eventually(t, 5*time.Second, "metrics", func() error {
		status, body := e.caddy.AdminRequest("GET", "/metrics", nil)
		if d := metricValue(body, connsSeries) - metricValue(before, connsSeries); d != 8 {
			return fmt.Errorf("%s grew by %v, want 8", connsSeries, d)
		}
		for _, want := range []string{
			`rampart_passthrough_connections_active{route="shared-port"} 0`,
			`rampart_passthrough_bytes_total{direction="up",route="shared-port"}`,
			`rampart_passthrough_upstream_healthy{route="shared-port",upstream="` + b1.addr + `"} 1`,
		} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("GET /metrics (%d) lacks %s", status, want)
			}
		}
		return nil
	})
	for _, name := range []string{"a.tenant.test", "api-7.test"} {
		s, err := openSession(e.https, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s.backend != "three" {
			t.Fatalf("%s reached backend %q", name, s.backend)
		}
		s.conn.Close()
	}
	// not a passthrough name (one label too deep for the wildcard): Caddy
	c, err := dialTLS(e.https, "x.a.tenant.test")
	if err == nil {
		if org := peerOrg(c); strings.Contains(org, "passthrough backend") {
			t.Fatal("x.a.tenant.test was passed through by a one-label wildcard")
		}
		c.Close()
	}

	// not TLS: closed, nothing written back
	raw, err := net.Dial("tcp", e.https)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(raw, "GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(raw)
	raw.Close()
	if len(got) != 0 || err != nil {
		t.Fatalf("plain HTTP to the HTTPS port got %q, %v; want a clean close", got, err)
	}
}

// TestDefaultRoute: unknown names go to the default backend, names Caddy
// has a certificate for still reach Caddy.
func TestDefaultRoute(t *testing.T) {
	b1 := startBackend(t, "pass", "")
	def := startBackend(t, "default", "")
	// late.test never gets a certificate (its CA is unreachable): it is
	// still Caddy's site, not an unknown name for the default route
	e := startEdgeWith(t, fmt.Sprintf(`passthrough {
		pass.test %s
		default %s
	}`, b1.addr, def.addr), defaultSite+`

late.test {
	tls {
		issuer acme {
			dir http://127.0.0.1:9/directory
		}
	}
	respond "late"
}`)
	e.waitSiteCert(t) // the terminated site beside a default route
	s, err := openSession(e.https, "unknown.test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.conn.Close()
	if s.backend != "default" {
		t.Fatalf("unknown.test reached %q, want the default backend", s.backend)
	}
	if late, err := openSession(e.https, "late.test"); err == nil {
		late.conn.Close()
		t.Fatalf("late.test, a site of this Caddy without a certificate yet, reached backend %q", late.backend)
	}
}

// TestHealthChecks: a dead backend is taken out, and comes back.
func TestHealthChecks(t *testing.T) {
	b1 := startBackend(t, "one", "")
	b2 := startBackend(t, "two", "")
	addr2 := b2.addr
	e := startEdge(t, fmt.Sprintf(`passthrough {
		pass.test %s %s {
			health_interval 100ms
			health_timeout 200ms
			health_fails 1
			health_passes 2
		}
	}`, b1.addr, addr2))
	spread := func(n int) map[string]int {
		seen := map[string]int{}
		for range n {
			s, err := openSession(e.https, "pass.test")
			if err != nil {
				seen["error"]++
				continue
			}
			seen[s.backend]++
			s.conn.Close()
		}
		return seen
	}
	if got := spread(4); got["one"] != 2 || got["two"] != 2 {
		t.Fatalf("before: %v", got)
	}
	b2.stop()
	time.Sleep(400 * time.Millisecond)
	if got := spread(6); got["one"] != 6 {
		t.Fatalf("with two down: %v, want every connection on one", got)
	}
	healthSeries := `rampart_passthrough_upstream_healthy{route="pass.test",upstream="` + addr2 + `"}`
	if _, body := e.caddy.AdminRequest("GET", "/metrics", nil); !strings.Contains(body, healthSeries+" 0") {
		t.Fatalf("metrics lack %s 0", healthSeries)
	}
	startBackend(t, "two-again", addr2)
	eventually(t, 5*time.Second, "backend two back in rotation", func() error {
		if got := spread(4); got["two-again"] == 0 {
			return fmt.Errorf("spread %v", got)
		}
		return nil
	})
	if _, body := e.caddy.AdminRequest("GET", "/metrics", nil); !strings.Contains(body, healthSeries+" 1") {
		t.Fatalf("metrics lack %s 1", healthSeries)
	}
}

// TestConnCurLimit: the stick module's track handler, placed by the
// passthrough option, refuses the connection over a per-name limit.
func TestConnCurLimit(t *testing.T) {
	if _, err := caddy.GetModule("layer4.handlers.track"); err != nil {
		t.Skip("the stick module (layer4.handlers.track) is not registered in this build")
	}
	b1 := startBackend(t, "one", "")
	e := startEdge(t, fmt.Sprintf(`stick_table per_sni {
		type string len 253
		size 1000
		expire 1m
		store conn_cur
	}
	passthrough {
		pass.test %s {
			track per_sni {l4.tls.server_name} {
				reject conn_cur gt 2
			}
		}
	}`, b1.addr))
	var open []*session
	defer func() {
		for _, s := range open {
			s.conn.Close()
		}
	}()
	for i := range 2 {
		s, err := openSession(e.https, "pass.test")
		if err != nil {
			t.Fatalf("connection %d under the limit: %v", i+1, err)
		}
		open = append(open, s)
	}
	if s, err := openSession(e.https, "pass.test"); err == nil {
		s.conn.Close()
		t.Fatal("third concurrent connection to pass.test accepted with reject conn_cur gt 2")
	}
	open[0].conn.Close()
	open = open[1:]
	eventually(t, 5*time.Second, "a connection after one closed", func() error {
		s, err := openSession(e.https, "pass.test")
		if err != nil {
			return err
		}
		open = append(open, s)
		return nil
	})
}

// TestReloadUnderLoad: connections relayed when the config changes keep
// working; new connections follow the new config.
func TestReloadUnderLoad(t *testing.T) {
	b1 := startBackend(t, "old", "")
	b2 := startBackend(t, "new", "")
	e := startEdge(t, fmt.Sprintf("passthrough {\n\t\tpass.test %s\n\t}", b1.addr))
	const n = 20
	var sessions []*session
	for i := range n {
		s, err := openSession(e.https, "pass.test")
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		defer s.conn.Close()
		sessions = append(sessions, s)
	}
	// keep traffic flowing on every session while the config changes
	stop := make(chan struct{})
	errs := make(chan error, n)
	for i, s := range sessions {
		go func() {
			for k := 0; ; k++ {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				if err := s.echo(fmt.Sprintf("session %d message %d", i, k)); err != nil {
					errs <- fmt.Errorf("session %d: %w", i, err)
					return
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	e.reload(t, fmt.Sprintf("passthrough {\n\t\tpass.test %s\n\t}", b2.addr))
	waitBackend(t, e.https, "pass.test", "new")
	time.Sleep(300 * time.Millisecond)
	close(stop)
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("an established connection broke across the reload: %v", err)
		}
	}
	for i, s := range sessions {
		if s.backend != "old" {
			t.Fatalf("session %d was on %q", i, s.backend)
		}
	}

	// the routes are ordinary config: change the upstreams through /config
	// (routes[0] is pass.test, the last route closes non-TLS connections)
	held, err := openSession(e.https, "pass.test")
	if err != nil {
		t.Fatal(err)
	}
	defer held.conn.Close()
	path := "/config/apps/passthrough/listener_wrappers/0/routes/0/handle/0/upstreams"
	status, body := e.caddy.AdminRequest("PATCH", path, strings.NewReader(fmt.Sprintf("[%q]", b1.addr)))
	if status != 200 {
		t.Fatalf("PATCH %s: %d %s", path, status, body)
	}
	waitBackend(t, e.https, "pass.test", "old")
	if err := held.echo("still here after /config"); err != nil {
		t.Fatalf("a connection established before the /config change broke: %v", err)
	}
}

// TestHalfCloseAndIdle: a client that shuts its sending side still gets
// the backend's answer; a silent connection is closed after idle_timeout.
func TestHalfCloseAndIdle(t *testing.T) {
	b := startBackend(t, "one", "")
	e := startEdge(t, fmt.Sprintf(`passthrough {
		pass.test %s {
			idle_timeout 400ms
		}
	}`, b.addr))

	s, err := openSession(e.https, "pass.test")
	if err != nil {
		t.Fatal(err)
	}
	// the backend echoes slowly enough that the answer follows the FIN
	payload := strings.Repeat("half-close ", 20000)
	if _, err := fmt.Fprintf(s.conn, "%s\n", payload); err != nil {
		t.Fatal(err)
	}
	if err := s.conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(s.r)
	if err != nil || strings.TrimSpace(string(got)) != strings.TrimSpace(payload) {
		t.Fatalf("after the client's half-close read %d bytes (%v), want the %d echoed", len(got), err, len(payload)+1)
	}
	s.conn.Close()

	idle, err := openSession(e.https, "pass.test")
	if err != nil {
		t.Fatal(err)
	}
	defer idle.conn.Close()
	if err := idle.echo("alive"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = idle.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.r.ReadByte(); err == nil {
		t.Fatal("the backend wrote on a silent connection")
	}
	if el := time.Since(start); el < 350*time.Millisecond || el > 2*time.Second {
		t.Fatalf("silent connection closed after %v, want about 400ms-500ms", el)
	}
}

// TestExplicitListenerWrapper: the passthrough listener wrapper placed by
// hand before tls in a server's listener_wrappers, without the app.
func TestExplicitListenerWrapper(t *testing.T) {
	b := startBackend(t, "explicit", "")
	port := harness.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	http_port %d
	https_port %d
	local_certs
	servers :%d {
		listener_wrappers {
			passthrough {
				pass.test %s
			}
			tls
		}
	}
}

%s
`, harness.FreePort(t), port, port, b.addr, defaultSite))
	harness.WaitListening(t, addr, 10*time.Second)
	e := &edge{caddy: c, https: addr}
	e.waitSiteCert(t)
	s, err := openSession(addr, "pass.test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.conn.Close()
	if s.backend != "explicit" {
		t.Fatalf("reached %q", s.backend)
	}
}

// TestComposeWithStickWrapper: the stick listener wrapper in the option's
// listener_wrappers limits every connection to the HTTPS port, passthrough
// and terminated alike, before the routes read anything.
func TestComposeWithStickWrapper(t *testing.T) {
	if _, err := caddy.GetModule("caddy.listeners.stick"); err != nil {
		t.Skip("the stick listener wrapper is not registered in this build")
	}
	b := startBackend(t, "one", "")
	e := startEdge(t, fmt.Sprintf(`stick_table per_ip {
		type ip
		size 100
		expire 1m
		store conn_cur
	}
	passthrough {
		listener_wrappers {
			stick per_ip {
				reject conn_cur gt 2
			}
		}
		pass.test %s
	}`, b.addr))
	// two connections fit once the edge has seen the earlier ones close
	// (the certificate wait above used some)
	var s1 *session
	var site net.Conn
	eventually(t, 5*time.Second, "two connections under the limit", func() error {
		var err error
		if s1, err = openSession(e.https, "pass.test"); err != nil {
			return fmt.Errorf("first connection (passthrough): %w", err)
		}
		if site, err = dialTLS(e.https, "site.test"); err != nil {
			s1.conn.Close()
			time.Sleep(100 * time.Millisecond)
			return fmt.Errorf("second connection (terminated site): %w", err)
		}
		return nil
	})
	defer s1.conn.Close()
	defer site.Close()
	if s3, err := openSession(e.https, "pass.test"); err == nil {
		s3.conn.Close()
		t.Fatal("third concurrent connection from one address accepted with reject conn_cur gt 2")
	}
	if c, err := dialTLS(e.https, "site.test"); err == nil {
		c.Close()
		t.Fatal("third concurrent connection to the terminated site accepted")
	}
}
