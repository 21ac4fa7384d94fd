package hideorigin_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/rampart-edge/caddy-rampart/caddyfile"
	"github.com/rampart-edge/caddy-rampart/integration/harness"
	"github.com/rampart-edge/caddy-rampart/modules/hideorigin/audit"
	"github.com/rampart-edge/caddy-rampart/modules/hideorigin/sign"
)

const edgeKey = "integration-edge-key-0123456789"

// setup is one edge in front of one origin Caddy in front of the leaky app.
type setup struct {
	edge        string // https://localhost:port
	origin      string // 127.0.0.1:port of the origin's Caddy (plain HTTP)
	originTLS   string // 127.0.0.1:port where the origin serves TLS (leaky setup only)
	closeOrigin string // 127.0.0.1:port of an origin_lock with deny close (locked setup only)
	tls         string // the edge's tls directive
	app         *leakyOrigin
	caddy       *harness.Caddy
}

// start runs the leaky setup (plain reverse_proxy, the origin reachable
// directly and serving the site's certificate, which also names
// origin.internal) or the hidden one (hide_origin with signing on the edge,
// origin_lock on the origin, a clean edge certificate).
func start(t *testing.T, hidden bool) *setup {
	t.Helper()
	s := &setup{
		edge:   fmt.Sprintf("https://localhost:%d", harness.FreePort(t)),
		origin: fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)),
	}
	s.app = startLeakyOrigin(t, "http://"+s.origin)
	var cfg string
	if !hidden {
		s.originTLS = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
		oc := harness.SelfSigned(t, "origin", "localhost", "origin.internal")
		cert, key := oc.CertFile, oc.KeyFile
		cfg = fmt.Sprintf(`{
	auto_https disable_redirects
}
%[1]s {
	tls %[2]s %[3]s
	reverse_proxy %[4]s
}
http://:%[5]s {
	reverse_proxy %[6]s
}
https://localhost:%[7]s {
	tls %[2]s %[3]s
	reverse_proxy %[6]s
}
`, s.edge, cert, key, s.origin, port(s.origin), s.app.addr, port(s.originTLS))
	} else {
		s.closeOrigin = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
		ec := harness.SelfSigned(t, "edge", "localhost")
		cert, key := ec.CertFile, ec.KeyFile
		s.tls = "tls " + cert + " " + key
		cfg = fmt.Sprintf(`{
	auto_https disable_redirects
}
%[1]s {
	tls %[2]s %[3]s
	hide_origin {
		origin origin.internal [fd00::10]:8443 10.0.0.10:8080
		sign %[8]s
	}
	reverse_proxy %[4]s
}
http://:%[5]s {
	origin_lock {
		key %[8]s
		max_skew 30s
		allow 127.0.0.1/32
	}
	reverse_proxy %[6]s
}
http://:%[7]s {
	origin_lock %[8]s {
		deny close
	}
	respond "inside" 200
}
`, s.edge, cert, key, s.origin, port(s.origin), s.app.addr, port(s.closeOrigin), edgeKey)
	}
	s.caddy = harness.RunCaddyfile(t, cfg)
	harness.WaitListening(t, strings.TrimPrefix(s.edge, "https://"), 10*time.Second)
	harness.WaitListening(t, s.origin, 10*time.Second)
	return s
}

func port(hostport string) string { return hostport[strings.LastIndex(hostport, ":")+1:] }

func (s *setup) auditConfig(t *testing.T) audit.Config {
	origins := []string{s.origin}
	if s.originTLS != "" {
		origins = append(origins, s.originTLS)
	} else {
		// where the leaky setup served TLS: nothing listens there now
		origins = append(origins, fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)))
	}
	return audit.Config{
		Site:        s.edge,
		Origins:     origins,
		OriginHosts: []string{"origin.internal", "[fd00::10]:8443", "10.0.0.10:8080"},
		Paths:       append([]string{"/gz", "/zst", "/chunked", "/api/data", "/doc.txt"}, evasionPaths...),
		Timeout:     5 * time.Second,
	}
}

// leakKinds are the findings the leaky setup must show: place and name (a
// header name, or a request path for bodies).
var leakKinds = []struct{ place, name string }{
	{"fingerprint", "Server"},
	{"fingerprint", "X-Powered-By"},
	{"fingerprint", "Via"},
	{"header", "X-Backend-Server"},
	{"redirect", "Location"},
	{"header", "Content-Location"},
	{"header", "Refresh"},
	{"header", "Link"},
	{"cookie", "Set-Cookie"},
	{"header", "Access-Control-Allow-Origin"},
	{"header", "Content-Security-Policy"},
	// no Alt-Svc: Caddy v2.11.9's reverse_proxy drops the upstream's Alt-Svc
	// as a hop-by-hop header (hide_origin's handling is unit-tested)
	{"header", "X-Upstream-Url"},
	{"body", "/ "},        // plain, Content-Length
	{"body", "/gz"},       // gzip
	{"body", "/zst"},      // zstd, JSON
	{"body", "/chunked"},  // chunked, match split across two chunks
	{"body", "/api/data"}, // chunked JSON
	{"body", "/404-"},     // 404 page
	{"error_page", "/error"},
	{"error_page", "stack trace"},
	{"certificate", "san_dns"},
	{"bypass", "direct_access"},
	{"origin_certificate", "sni localhost"},
}

// evasionPaths serve the origin's identity wrapped or spelled to slip
// past a scrubber: the leaky setup must show each, the hidden one none.
var evasionPaths = []string{"/ev/two-codings", "/ev/encoded", "/ev/script.js", "/ev/page.xhtml", "/ev/logo.svg", "/ev/feed.xml",
	"/ev/ld.json", "/ev/problem.json", "/ev/untyped", "/ev/decimal", "/ev/octal", "/ev/hex", "/ev/mapped", "/ev/ipv6", "/ev/trailing-dot"}

func init() {
	for _, p := range evasionPaths {
		leakKinds = append(leakKinds, struct{ place, name string }{"body", p + " "})
	}
	leakKinds = append(leakKinds, struct{ place, name string }{"redirect", "/ev/encoded"})
}

func hasFinding(r *audit.Report, place, name string) bool {
	for _, f := range r.Findings {
		if f.Place != place {
			continue
		}
		if f.Name == name || strings.Contains(f.URL+" ", name) {
			return true
		}
	}
	return false
}

func TestAuditLeakyVersusHidden(t *testing.T) {
	t.Run("leaky", func(t *testing.T) {
		s := start(t, false)
		report, err := audit.Run(context.Background(), s.auditConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range leakKinds {
			if !hasFinding(report, k.place, k.name) {
				t.Errorf("audit missed the %s leak %q", k.place, k.name)
			}
		}
		if t.Failed() {
			var b bytes.Buffer
			report.WriteText(&b)
			t.Log(b.String())
		}
		runBinaryAudit(t, s, 1)
	})
	t.Run("hidden", func(t *testing.T) {
		s := start(t, true)
		report, err := audit.Run(context.Background(), s.auditConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		if !report.Clean() || report.Requests < 15 {
			var b bytes.Buffer
			report.WriteText(&b)
			t.Fatalf("hidden setup is not clean (%d requests):\n%s", report.Requests, b.String())
		}
		for _, c := range report.Checks {
			if c.Name == "direct_access" && strings.Contains(c.Target, s.origin) && c.Result != "refused (403)" {
				t.Errorf("origin_lock did not refuse the direct request: %+v", c)
			}
		}
		runBinaryAudit(t, s, 0)
	})
}

// runBinaryAudit runs `caddy origin-audit` from the real binary built from
// xcaddy.json (shared with the other tests that build it; about 30 s with a
// warm cache). Skipped with -short or RAMPART_BINARY_AUDIT=0.
func runBinaryAudit(t *testing.T, s *setup, wantCode int) {
	if testing.Short() || os.Getenv("RAMPART_BINARY_AUDIT") == "0" {
		t.Log("binary origin-audit skipped")
		return
	}
	bin := harness.BuildCaddy(t)
	cfg := s.auditConfig(t)
	paths := filepath.Join(t.TempDir(), "paths")
	os.WriteFile(paths, []byte(strings.Join(cfg.Paths, "\n")+"\n"), 0o600)
	args := []string{"origin-audit", "--site", cfg.Site, "--paths", paths, "--json", "--timeout", "5s"}
	for _, o := range cfg.Origins {
		args = append(args, "--origin", o)
	}
	for _, o := range cfg.OriginHosts {
		args = append(args, "--origin-host", o)
	}
	cmd := exec.Command(bin, args...)
	out, _ := cmd.Output()
	if code := cmd.ProcessState.ExitCode(); code != wantCode {
		t.Fatalf("caddy origin-audit exited %d, want %d:\n%s", code, wantCode, out)
	}
	var report audit.Report
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("origin-audit --json output: %v\n%s", err, out)
	}
	if (len(report.Findings) == 0) != (wantCode == 0) {
		t.Fatalf("binary report has %d findings with exit code %d", len(report.Findings), wantCode)
	}
}

func httpClient() *http.Client {
	return &http.Client{
		Timeout:       10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableCompression: true}, //nolint:gosec
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := httpClient().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestHiddenBehaviour(t *testing.T) {
	s := start(t, true)
	// a redirect to the origin becomes one to the site
	resp, _ := get(t, s.edge+"/login", nil)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != s.edge+"/login/form" {
		t.Errorf("login redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// a small Content-Length body keeps an exact Content-Length
	resp, body := get(t, s.edge+"/", nil)
	if resp.ContentLength != int64(len(body)) || !strings.Contains(body, `href="`+s.edge+`/"`) || strings.Contains(body, "origin.internal") {
		t.Errorf("front page: length %d/%d body %q", resp.ContentLength, len(body), body)
	}
	if resp.Header.Get("Server") != "" || resp.Header.Get("Via") != "" || resp.Header.Get("X-Powered-By") != "" {
		t.Errorf("identifying headers left: %v", resp.Header)
	}
	// 5xx: the generic page with the request id
	resp, body = get(t, s.edge+"/error", nil)
	if resp.StatusCode != 500 || !strings.HasPrefix(body, "500 Internal Server Error\nrequest id: ") || strings.Contains(body, "goroutine") {
		t.Errorf("error page: %d %q", resp.StatusCode, body)
	}
	// a body the edge cannot decode is not passed on
	resp, body = get(t, s.edge+"/br", nil)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "request id") {
		t.Errorf("br body: %d %q", resp.StatusCode, body)
	}
	// a range of a text body: the whole body, rewritten
	resp, body = get(t, s.edge+"/doc.txt", map[string]string{"Range": "bytes=0-9"})
	if resp.StatusCode != http.StatusOK || strings.Count(body, s.edge+"/doc") != 50 || resp.Header.Get("Accept-Ranges") != "" {
		t.Errorf("range request: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	// 103 Early Hints are scrubbed too
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, fmt.Sprintf("%d %s", code, h.Get("Link")))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, s.edge+"/hints", nil)
	if resp, err := httpClient().Do(req); err != nil {
		t.Errorf("early hints: %v", err)
	} else {
		resp.Body.Close()
		if len(hints) != 1 || hints[0] != "103 <"+s.edge+"/style.css>; rel=preload; as=style" {
			t.Errorf("early hints: %q", hints)
		}
	}
	// trailers are scrubbed too
	if resp, err := httpClient().Get(s.edge + "/trailer"); err != nil {
		t.Errorf("trailer: %v", err)
	} else {
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.Trailer.Get("X-Origin-Trace"); got != "served by "+s.edge {
			t.Errorf("trailer: %q", got)
		}
	}
	// a WebSocket-style upgrade passes (headers scrubbed, stream untouched)
	testUpgrade(t, s)
	// a client-supplied X-Forwarded-For chain never reaches the origin; the
	// origin sees the signed client address, then the edge's
	resp, body = get(t, s.edge+"/echo-xff", map[string]string{"X-Forwarded-For": "198.51.100.66", "Rampart-Edge-Signature": "forged",
		"X-Real-Ip": "198.51.100.67", "Forwarded": "for=198.51.100.68", "True-Client-Ip": "198.51.100.69"})
	if resp.StatusCode != 200 || body != "xff=127.0.0.1, 127.0.0.1 sig=" {
		t.Errorf("through the edge: %d %q", resp.StatusCode, body)
	}
	// the upstream of a sibling reverse_proxy that never answered is hidden
	// too: found at provision time in the route's JSON
	other := fmt.Sprintf("127.0.0.2:%d", harness.FreePort(t))
	s.caddy.LoadCaddyfile(fmt.Sprintf("{\n\tauto_https disable_redirects\n}\n%s {\n\t%s\n\thide_origin\n\thandle /other/* {\n\t\treverse_proxy %s\n\t}\n\treverse_proxy %s\n}\n", s.edge, s.tls, other, s.app.addr))
	if _, body := get(t, s.edge+"/mention?addr="+other, nil); body != `<a href="`+s.edge+`/">the other backend</a>` {
		t.Errorf("sibling upstream not hidden: %q", body)
	}
	// a trusted proxy in front of the edge (the server's trusted_proxies):
	// its chain is kept
	s.caddy.LoadCaddyfile(fmt.Sprintf("{\n\tauto_https disable_redirects\n\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}\n}\n%s {\n\t%s\n\thide_origin\n\treverse_proxy %s\n}\n", s.edge, s.tls, s.app.addr))
	if _, body := get(t, s.edge+"/echo-xff", map[string]string{"X-Forwarded-For": "198.51.100.66", "X-Real-Ip": "198.51.100.66"}); body != "xff=198.51.100.66, 127.0.0.1 sig= X-Real-Ip=198.51.100.66" {
		t.Errorf("trusted proxy's chain: %q", body)
	}
	// Caddy's own error (no upstream answers) is the generic page too
	s.caddy.LoadCaddyfile(fmt.Sprintf("{\n\tauto_https disable_redirects\n}\n%s {\n\t%s\n\thide_origin\n\treverse_proxy 127.0.0.1:%d\n}\n", s.edge, s.tls, harness.FreePort(t)))
	resp, body = get(t, s.edge+"/", nil)
	if resp.StatusCode != http.StatusBadGateway || strings.Contains(body, "127.0.0.1") || !strings.Contains(body, "request id: ") {
		t.Errorf("edge 502: %d %q", resp.StatusCode, body)
	}
}

func testUpgrade(t *testing.T, s *setup) {
	t.Helper()
	conn, err := tls.Dial("tcp", strings.TrimPrefix(s.edge, "https://"), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}) //nolint:gosec
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", strings.TrimPrefix(s.edge, "https://"))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("upgrade response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Server") != "" || resp.Header.Get("X-Backend-Server") != "" {
		t.Fatalf("upgrade: %d %v", resp.StatusCode, resp.Header)
	}
	conn.Write([]byte("ping through the tunnel"))
	got := make([]byte, len("ping through the tunnel"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping through the tunnel" {
		t.Fatalf("tunnel echo: %q %v", got, err)
	}
}

func TestOriginLock(t *testing.T) {
	s := start(t, true)
	key, _ := sign.NewKey(edgeKey)
	direct := "http://" + s.origin
	// direct: refused
	if resp, _ := get(t, direct+"/", nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("direct request: %d", resp.StatusCode)
	}
	// through the edge: served
	if resp, _ := get(t, s.edge+"/api/data", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("through the edge: %d", resp.StatusCode)
	}
	signAt := func(at time.Time, uri string) string {
		return key.Sign(sign.Signed{Method: "GET", Host: "localhost", URI: uri, ClientIP: netip.MustParseAddr("203.0.113.9"), Time: at})
	}
	// a valid signature made here: accepted, and the signed client IP is
	// what the application sees first
	h := signAt(time.Now(), "/echo-xff")
	resp, body := get(t, direct+"/echo-xff", map[string]string{"Host": "localhost", sign.Header: h})
	if resp.StatusCode != 200 || body != "xff=203.0.113.9, 127.0.0.1 sig=" {
		t.Errorf("signed request: %d %q", resp.StatusCode, body)
	}
	// the same header again: a replay
	if resp, _ := get(t, direct+"/echo-xff", map[string]string{"Host": "localhost", sign.Header: h}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("replayed signature: %d", resp.StatusCode)
	}
	// stale, wrong path, wrong host, unknown key
	other, _ := sign.NewKey("another-key-that-is-long-enough")
	for name, c := range map[string]struct{ host, uri, header string }{
		"stale":       {"localhost", "/echo-xff", signAt(time.Now().Add(-time.Minute), "/echo-xff")},
		"future":      {"localhost", "/echo-xff", signAt(time.Now().Add(time.Minute), "/echo-xff")},
		"other path":  {"localhost", "/api/data", signAt(time.Now(), "/echo-xff")},
		"other host":  {"evil.example", "/echo-xff", signAt(time.Now(), "/echo-xff")},
		"unknown key": {"localhost", "/echo-xff", other.Sign(sign.Signed{Method: "GET", Host: "localhost", URI: "/echo-xff", ClientIP: netip.MustParseAddr("203.0.113.9"), Time: time.Now()})},
		"garbage":     {"localhost", "/echo-xff", "v=1;kid=nothex"},
	} {
		if resp, _ := get(t, direct+c.uri, map[string]string{"Host": c.host, sign.Header: c.header}); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s signature: %d", name, resp.StatusCode)
		}
	}
	// deny close: no response at all
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.closeOrigin+"/", nil)
	if resp, err := httpClient().Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("deny close answered %d", resp.StatusCode)
	}
}
