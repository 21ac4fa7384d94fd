// Package certstorage proves the Redis certificate storage end to end:
// three edges (real binaries built from xcaddy.json) share one redis-server
// and obtain their certificates from Pebble, Let's Encrypt's test CA.
package certstorage

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/challtestsrv"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// pebble is the ACME CA in this process; it counts the orders it created.
type pebble struct {
	dir    string // ACME directory URL
	root   string // PEM file of the ACME server's own TLS certificate
	orders atomic.Int32
	certs  atomic.Int32
	dns    *challtestsrv.ChallSrv
	log    *syncBuffer
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

// statusRecorder keeps the status code of a response.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func startPebble(t *testing.T, httpPort int) *pebble {
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
	p.dns = dns

	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "test"}})
	validator := va.New(logger, httpPort, harness.FreePort(t), false, dnsAddr, store)
	acme := wfe.New(logger, store, validator, authority, nil, false, false, 1, 1)
	front := acme.Handler()
	// Count the orders Pebble created (201 on new-order) and the
	// certificates it issued (200 on finalize).
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		front.ServeHTTP(rec, r)
		switch {
		case r.URL.Path == "/order-plz" && rec.status == http.StatusCreated:
			p.orders.Add(1)
		case strings.HasPrefix(r.URL.Path, "/finalize-order/") && rec.status == http.StatusOK:
			p.certs.Add(1)
		}
	})
	srv := httptest.NewUnstartedServer(counted)
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

// edgeCaddyfile is the config every edge runs; only the bind address and
// the admin port differ.
func edgeCaddyfile(p *pebble, bind string, adminPort, httpPort, httpsPort int, redisAddr string, names []string) string {
	var sites strings.Builder
	for _, name := range names {
		fmt.Fprintf(&sites, "%s {\n\trespond \"%s from {system.hostname}\"\n}\n\n", name, name)
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	default_bind %s
	http_port %d
	https_port %d
	email ops@example.org
	storage redis {
		redis redis://%s/0
		prefix certstorage
		lock_ttl 5s
	}
	acme_ca %s
	acme_ca_root %s
	cert_issuer acme {
		disable_tlsalpn_challenge
	}
}

%s`, adminPort, bind, httpPort, httpsPort, redisAddr, p.dir, p.root, sites.String())
}

// serial dials addr with SNI name and returns the leaf's issuer and serial.
func serial(addr, name string) (string, string, error) {
	dialer := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(dialer, "tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	leaf := c.ConnectionState().PeerCertificates[0]
	return leaf.Issuer.String(), leaf.SerialNumber.String(), nil
}

// TestThreeEdgesOneOrderPerName: three edges with the same sites and one
// Redis obtain one certificate per name from Pebble and all serve it.
// Every name resolves to a different edge, so Pebble validates most
// challenges on an edge that did not start them (it answers from storage).
func TestThreeEdgesOneOrderPerName(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the real binary")
	}
	bin := harness.BuildCaddy(t)
	redisAddr, _ := harness.StartRedis(t)
	httpPort, httpsPort := harness.FreePort(t), harness.FreePort(t)
	p := startPebble(t, httpPort)
	names := []string{"a.test", "b.test", "c.test"}
	binds := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	for i, name := range names {
		p.dns.AddDNSARecord(name, []string{binds[i]})
	}

	dir := t.TempDir()
	procs := make([]*harness.Process, len(binds))
	var wg sync.WaitGroup
	for i, bind := range binds {
		file := filepath.Join(dir, fmt.Sprintf("Caddyfile.%d", i))
		config := edgeCaddyfile(p, bind, harness.FreePort(t), httpPort, httpsPort, redisAddr, names)
		if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		// Start all three at once: they race for every certificate.
		wg.Go(func() {
			procs[i] = harness.Start(t, fmt.Sprintf("%s:%d", bind, httpsPort), bin, "run", "--config", file, "--adapter", "caddyfile")
		})
	}
	wg.Wait()
	defer func() {
		if t.Failed() {
			for i, proc := range procs {
				if proc != nil {
					t.Logf("edge %d output:\n%s", i+1, proc.Output())
				}
			}
			t.Logf("pebble:\n%s", p.log.String())
		}
	}()

	for _, name := range names {
		var want string
		for i, bind := range binds {
			addr := fmt.Sprintf("%s:%d", bind, httpsPort)
			deadline := time.Now().Add(60 * time.Second)
			for {
				issuer, sn, err := serial(addr, name)
				if err == nil && strings.Contains(issuer, "Pebble") {
					if want == "" {
						want = sn
					} else if sn != want {
						t.Fatalf("edge %d serves %s with serial %s, edge 1 with %s", i+1, name, sn, want)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("edge %d has no Pebble certificate for %s after 60s (issuer %q, %v)", i+1, name, issuer, err)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		t.Logf("%s: all three edges serve serial %s", name, want)
	}
	// Give a late edge the time to order what it should not.
	time.Sleep(2 * time.Second)
	if n, c := p.orders.Load(), p.certs.Load(); n != int32(len(names)) || c != int32(len(names)) {
		t.Fatalf("Pebble created %d orders and issued %d certificates for %d names, want one of each per name", n, c, len(names))
	}
	distributed := 0
	for _, proc := range procs {
		distributed += strings.Count(proc.Output(), `"distributed":true`)
	}
	t.Logf("Pebble: %d orders, %d certificates; %d challenges answered by an edge that did not start them", p.orders.Load(), p.certs.Load(), distributed)
}
