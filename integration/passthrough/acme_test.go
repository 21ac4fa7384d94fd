package passthrough_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// acmeCaddyfile: passthrough for pass.test; site.test by TLS-ALPN-01 only
// (on the HTTPS port shared with passthrough), other.test by HTTP-01 only.
func acmeCaddyfile(p *harness.Pebble, httpPort, httpsPort int, backendAddr, extraGlobal string) string {
	issuer := func(disable string) string {
		return fmt.Sprintf(`tls {
		issuer acme {
			dir %s
			trusted_roots %s
			%s
		}
	}`, p.Dir, p.Root, disable)
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
func checkACME(t *testing.T, p *harness.Pebble, https string) {
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
	logs := p.Log()
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
	p := harness.StartPebble(t, httpPort, httpsPort, nil)
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
	p := harness.StartPebble(t, httpPort, httpsPort, nil)
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
