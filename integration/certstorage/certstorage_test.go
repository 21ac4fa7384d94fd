// Package certstorage proves the Redis certificate storage end to end:
// three edges (real binaries built from xcaddy.json) share one redis-server
// and obtain their certificates from Pebble, Let's Encrypt's test CA.
package certstorage

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// counter counts the orders Pebble created (201 on new-order) and the
// certificates it issued (200 on finalize).
type counter struct {
	orders, certs atomic.Int32
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

func (c *counter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		switch {
		case r.URL.Path == "/order-plz" && rec.status == http.StatusCreated:
			c.orders.Add(1)
		case strings.HasPrefix(r.URL.Path, "/finalize-order/") && rec.status == http.StatusOK:
			c.certs.Add(1)
		}
	})
}

// edgeCaddyfile is the config every edge runs; only the bind address and
// the admin port differ.
func edgeCaddyfile(p *harness.Pebble, bind string, adminPort, httpPort, httpsPort int, redisAddr string, names []string) string {
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

%s`, adminPort, bind, httpPort, httpsPort, redisAddr, p.Dir, p.Root, sites.String())
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
	var count counter
	p := harness.StartPebble(t, httpPort, harness.FreePort(t), count.wrap)
	names := []string{"a.test", "b.test", "c.test"}
	binds := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	for i, name := range names {
		p.DNS.AddDNSARecord(name, []string{binds[i]})
	}

	// Every edge listens before any manages the names: an edge that orders
	// while the edge Pebble validates on is still starting gets "connection
	// refused", and certmagic's retry a minute later is a second order (as
	// it would be in production with an edge down). So each edge starts on
	// a config that only opens its HTTP port, and then all three load the
	// real config at once: they still race for every certificate.
	dir := t.TempDir()
	procs := make([]*harness.Process, len(binds))
	configs := make([][]byte, len(binds))
	admins := make([]int, len(binds))
	for i, bind := range binds {
		admins[i] = harness.FreePort(t)
		file := filepath.Join(dir, fmt.Sprintf("Caddyfile.%d", i))
		config := edgeCaddyfile(p, bind, admins[i], httpPort, httpsPort, redisAddr, names)
		if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		adapted, err := exec.Command(bin, "adapt", "--config", file, "--adapter", "caddyfile").Output()
		if err != nil {
			t.Fatalf("caddy adapt %s: %v", file, err)
		}
		configs[i] = adapted
		start := filepath.Join(dir, fmt.Sprintf("Caddyfile.start.%d", i))
		if err := os.WriteFile(start, []byte(fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\tdefault_bind %s\n\thttp_port %d\n}\n\nhttp:// {\n\trespond \"starting\"\n}\n", admins[i], bind, httpPort)), 0o600); err != nil {
			t.Fatal(err)
		}
		procs[i] = harness.Start(t, fmt.Sprintf("%s:%d", bind, httpPort), bin, "run", "--config", start, "--adapter", "caddyfile")
	}
	var wg sync.WaitGroup
	for i := range binds {
		wg.Go(func() {
			resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/load", admins[i]), "application/json", bytes.NewReader(configs[i]))
			if err != nil {
				t.Errorf("edge %d: loading its config: %v", i+1, err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("edge %d: loading its config: %d %s", i+1, resp.StatusCode, body)
			}
		})
	}
	wg.Wait()
	for _, bind := range binds {
		harness.WaitListening(t, fmt.Sprintf("%s:%d", bind, httpsPort), 30*time.Second)
	}
	defer func() {
		if t.Failed() {
			for i, proc := range procs {
				if proc != nil {
					t.Logf("edge %d output:\n%s", i+1, proc.Output())
				}
			}
			t.Logf("pebble:\n%s", p.Log())
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
	if n, c := count.orders.Load(), count.certs.Load(); n != int32(len(names)) || c != int32(len(names)) {
		t.Fatalf("Pebble created %d orders and issued %d certificates for %d names, want one of each per name", n, c, len(names))
	}
	distributed := 0
	for _, proc := range procs {
		distributed += strings.Count(proc.Output(), `"distributed":true`)
	}
	t.Logf("Pebble: %d orders, %d certificates; %d challenges answered by an edge that did not start them", count.orders.Load(), count.certs.Load(), distributed)
}
