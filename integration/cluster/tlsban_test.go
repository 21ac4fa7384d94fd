package cluster_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// tlsEdgeConfig is an edge whose shared per_ip table is read on connections:
// the HTTPS server's listener wrapper and a layer4 route refuse banned
// clients before their TLS handshake; the HTTP site's /ban bans the caller.
const tlsEdgeConfig = `{
	admin 127.0.0.1:%[1]s
	auto_https disable_redirects
	log {
		level WARN
	}
	stick_cluster {
		redis %[2]s
		node %[3]s
		sync %[4]s
		timeout 50ms
	}
	stick_table per_ip {
		type ip
		size 10k
		expire 10m
		store conn_cnt http_req_cnt ban
		shared
	}
	servers 127.0.0.1:%[6]s {
		listener_wrappers {
			stick per_ip {
				reject banned
			}
			tls
		}
	}
	layer4 {
		127.0.0.1:%[7]s {
			route {
				track per_ip {
					reject banned
				}
				proxy %[8]s
			}
		}
	}
}

http://127.0.0.1:%[5]s {
	track per_ip {client_ip}
	@banme path /ban
	stick_ban @banme per_ip 10m
	respond "ok"
}

https://edge.test:%[6]s {
	bind 127.0.0.1
	tls %[9]s %[10]s
	respond "secure"
}
`

// tlsEdge is an edge with its HTTP, HTTPS (listener wrapper) and layer4
// addresses.
type tlsEdge struct {
	*edge
	https, l4 string
}

// startTLSEdges runs n edges of tlsEdgeConfig; their layer4 routes proxy to
// backend.
func startTLSEdges(t *testing.T, n int, redisURL, backend string, cert harness.Certificate) []*tlsEdge {
	t.Helper()
	bin := harness.BuildCaddy(t)
	edges := make([]*tlsEdge, n)
	for i := range edges {
		ports := make([]string, 4)
		for j := range ports {
			ports[j] = strconv.Itoa(harness.FreePort(t))
		}
		admin, httpPort, httpsPort, l4Port := ports[0], ports[1], ports[2], ports[3]
		e := &tlsEdge{edge: &edge{name: fmt.Sprintf("edge-%d", i+1), addr: "127.0.0.1:" + httpPort, admin: "127.0.0.1:" + admin},
			https: "127.0.0.1:" + httpsPort, l4: "127.0.0.1:" + l4Port}
		cfg := fmt.Sprintf(tlsEdgeConfig, admin, redisURL, e.name, syncEvery, httpPort, httpsPort, l4Port, backend, cert.CertFile, cert.KeyFile)
		e.proc = runEdge(t, bin, cfg, e.https)
		harness.WaitListening(t, e.l4, 10*time.Second)
		harness.WaitListening(t, e.addr, 10*time.Second)
		edges[i] = e
	}
	return edges
}

// startTLSBackend runs a TLS server with cert that completes handshakes.
func startTLSBackend(t *testing.T, cert harness.Certificate) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go harness.ServeEach(ln, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_ = c.(*tls.Conn).Handshake()
	})
	return ln.Addr().String()
}

// handshake dials addr from the loopback address from and runs a TLS
// handshake for edge.test. It reports whether the handshake completed;
// false means the server closed the connection instead. Anything else (a
// hung handshake, a dial or certificate error) is an error.
func handshake(from, addr string, roots *x509.CertPool) (bool, error) {
	d := &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return false, fmt.Errorf("dial %s from %s: %w", addr, from, err)
	}
	defer raw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err = tls.Client(raw, &tls.Config{ServerName: "edge.test", RootCAs: roots}).HandshakeContext(ctx)
	var ne net.Error
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return false, fmt.Errorf("TLS handshake with %s from %s hung instead of completing or being refused: %w", addr, from, err)
	case errors.As(err, new(*tls.CertificateVerificationError)):
		return false, fmt.Errorf("TLS handshake with %s from %s: %w", addr, from, err)
	}
	return false, nil
}

// mustHandshake fails the test unless the handshake's outcome is want.
func mustHandshake(t *testing.T, from, addr string, roots *x509.CertPool, want bool) {
	t.Helper()
	ok, err := handshake(from, addr, roots)
	if err != nil {
		t.Fatal(err)
	}
	if ok != want {
		t.Fatalf("TLS handshake with %s from %s: completed %v, want %v", addr, from, ok, want)
	}
}

// TestBanRefusesNextTLSHandshakeOnOtherEdges: a ban set on edge 1, through
// the admin API or by the stick_ban handler, makes edges 2 and 3 close the
// banned client's next connection before its TLS handshake, both in the
// HTTPS server's listener wrapper (caddy.listeners.stick) and in a layer4
// route (layer4.handlers.track), within 2 × sync (asserted against a
// generous bound; the measured time is logged). A client that is not banned
// still completes its handshakes on every edge.
func TestBanRefusesNextTLSHandshakeOnOtherEdges(t *testing.T) {
	r := startRedis(t, "")
	cert := harness.SelfSigned(t, "Rampart test", "edge.test")
	roots := x509.NewCertPool()
	roots.AddCert(mustParse(t, cert.TLS.Certificate[0]))
	edges := startTLSEdges(t, 3, r.url(), startTLSBackend(t, cert), cert)
	plain := make([]*edge, len(edges))
	for i, e := range edges {
		plain[i] = e.edge
	}
	waitClusterFormed(t, plain)

	const (
		adminBanned = "127.0.0.11" // banned with PUT on edge 1; the other edges saw it before
		httpBanned  = "127.0.0.12" // banned by stick_ban on edge 1; unknown to the other edges
		bystander   = "127.0.0.13" // never banned
	)
	for _, e := range edges {
		for _, addr := range []string{e.https, e.l4} {
			for _, from := range []string{adminBanned, bystander} {
				mustHandshake(t, from, addr, roots, true)
			}
		}
	}

	// bound is generous for a loaded CI machine; the claim is 2 × sync and
	// the logged times show it.
	const bound = 2 * time.Second
	propagate := func(victim, how string, ban func()) {
		ban()
		set := time.Now()
		var wg sync.WaitGroup
		for _, e := range edges[1:] {
			for layer, addr := range map[string]string{"listener wrapper": e.https, "layer4 route": e.l4} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						ok, err := handshake(victim, addr, roots)
						if err != nil {
							t.Error(err)
							return
						}
						if !ok {
							break
						}
						if time.Since(set) > bound {
							t.Errorf("%s (%s) still completes %s's handshakes %v after the ban (%s) on edge-1", e.name, layer, victim, bound, how)
							return
						}
						time.Sleep(5 * time.Millisecond)
					}
					took := time.Since(set)
					t.Logf("ban of %s (%s on edge-1) refused its next TLS handshake on %s's %s after %v (2 × sync = %v)",
						victim, how, e.name, layer, took.Round(time.Millisecond), 2*syncEvery)
				}()
			}
		}
		wg.Wait()
		// Once refused, always refused: not a one-off failure.
		for _, e := range edges {
			for _, addr := range []string{e.https, e.l4} {
				mustHandshake(t, victim, addr, roots, false)
			}
		}
	}

	propagate(adminBanned, "admin API PUT", func() {
		if code, body := edges[0].adminDo(t, http.MethodPut, "/stick-tables/per_ip/"+adminBanned, `{"ban": "10m"}`); code != http.StatusOK {
			t.Fatalf("PUT ban: %d %s", code, body)
		}
	})
	propagate(httpBanned, "stick_ban", func() {
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{
			LocalAddr: &net.TCPAddr{IP: net.ParseIP(httpBanned)}}).DialContext}}
		resp, err := hc.Get("http://" + edges[0].addr + "/ban")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /ban from %s: %d", httpBanned, resp.StatusCode)
		}
	})

	for _, e := range edges {
		for _, addr := range []string{e.https, e.l4} {
			mustHandshake(t, bystander, addr, roots, true)
		}
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
