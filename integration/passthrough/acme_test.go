package passthrough_test

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/letsencrypt/challtestsrv"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// pebble is Let's Encrypt's test CA running in this process, validating
// challenges against Caddy's ports on 127.0.0.1 (every name resolves there
// through challtestsrv's DNS server).
type pebble struct {
	dir  string // ACME directory URL
	root string // PEM file of the ACME server's own TLS certificate
	log  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startPebble(t *testing.T, httpPort, httpsPort int) *pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	p := &pebble{log: &syncBuffer{}}
	logger := log.New(p.log, "pebble ", log.LstdFlags)

	dnsAddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	dns, err := challtestsrv.New(challtestsrv.Config{DNSAddrs: []string{dnsAddr}, Log: log.New(io.Discard, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	dns.SetDefaultDNSIPv4("127.0.0.1")
	dns.SetDefaultDNSIPv6("")
	go dns.Run()
	t.Cleanup(dns.Shutdown)
	harness.WaitListening(t, dnsAddr, 5*time.Second)

	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "test"}})
	validator := va.New(logger, httpPort, httpsPort, false, dnsAddr, store)
	front := wfe.New(logger, store, validator, authority, nil, false, false, 1, 1)
	srv := httptest.NewUnstartedServer(front.Handler())
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p.dir = srv.URL + "/dir"
	p.root = filepath.Join(t.TempDir(), "pebble-wfe.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(p.root, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// acmeCaddyfile: passthrough for pass.test; site.test by TLS-ALPN-01 only
// (on the HTTPS port shared with passthrough), other.test by HTTP-01 only.
func acmeCaddyfile(p *pebble, httpPort, httpsPort int, backendAddr, extraGlobal string) string {
	issuer := func(disable string) string {
		return fmt.Sprintf(`tls {
		issuer acme {
			dir %s
			trusted_roots %s
			%s
		}
	}`, p.dir, p.root, disable)
	}
	return fmt.Sprintf(`{
	http_port %d
	https_port %d
	email ops@example.org%s
	passthrough {
		pass.test %s
	}
}

site.test {
	%s
	respond "site.test terminated with an ACME certificate"
}

other.test {
	%s
	respond "other.test terminated with an ACME certificate"
}
`, httpPort, httpsPort, extraGlobal, backendAddr, issuer("disable_http_challenge"), issuer("disable_tlsalpn_challenge"))
}

// checkACME waits for both ACME certificates and checks who presents what.
func checkACME(t *testing.T, p *pebble, https string) {
	t.Helper()
	for _, name := range []string{"site.test", "other.test"} {
		eventually(t, 60*time.Second, name+" certificate from Pebble", func() error {
			c, err := dialTLS(https, name)
			if err != nil {
				return err
			}
			defer c.Close()
			if org := peerOrg(c); !strings.Contains(org, "Pebble") {
				return fmt.Errorf("%s presented a certificate issued by %q", name, org)
			}
			return nil
		})
	}
	s, err := openSession(https, "pass.test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.conn.Close()
	if org := peerOrg(s.conn); !strings.Contains(org, "passthrough backend") {
		t.Fatalf("pass.test presented a certificate issued by %q, want the backend's own", org)
	}
	logs := p.log.String()
	for _, want := range []string{`Value:"site.test"`, "Attempting to validate w/ HTTP: http://other.test:"} {
		if !strings.Contains(logs, want) {
			t.Fatalf("Pebble's log lacks %s:\n%s", want, logs[:min(len(logs), 3000)])
		}
	}
	if strings.Contains(logs, "Attempting to validate w/ HTTP: http://site.test:") {
		t.Fatal("site.test was validated over HTTP-01 although it was disabled")
	}
}

// TestACMEBesidePassthrough runs Caddy in this process.
func TestACMEBesidePassthrough(t *testing.T) {
	httpPort, httpsPort := harness.FreePort(t), harness.FreePort(t)
	p := startPebble(t, httpPort, httpsPort)
	b := startBackend(t, "pass", "")
	harness.RunCaddyfile(t, acmeCaddyfile(p, httpPort, httpsPort, b.addr, ""))
	checkACME(t, p, fmt.Sprintf("127.0.0.1:%d", httpsPort))
}

// TestACMEBesidePassthroughBinary runs the real binary built from
// xcaddy.json.
func TestACMEBesidePassthroughBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the real binary")
	}
	bin := harness.BuildCaddy(t)
	httpPort, httpsPort := harness.FreePort(t), harness.FreePort(t)
	p := startPebble(t, httpPort, httpsPort)
	b := startBackend(t, "pass", "")
	dir := t.TempDir()
	global := fmt.Sprintf("\n\tadmin 127.0.0.1:%d\n\tstorage file_system %s", harness.FreePort(t), filepath.Join(dir, "data"))
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(acmeCaddyfile(p, httpPort, httpsPort, b.addr, global)), 0o600); err != nil {
		t.Fatal(err)
	}
	proc := harness.Start(t, fmt.Sprintf("127.0.0.1:%d", httpsPort), bin, "run", "--config", file, "--adapter", "caddyfile")
	defer func() {
		if t.Failed() {
			t.Logf("caddy output:\n%s", proc.Output())
		}
	}()
	checkACME(t, p, fmt.Sprintf("127.0.0.1:%d", httpsPort))
	if out := proc.Output(); !strings.Contains(out, `"identifier":"site.test","challenge_type":"tls-alpn-01"`) {
		t.Fatalf("Caddy's log does not show site.test solved by TLS-ALPN-01:\n%s", out)
	}
}
