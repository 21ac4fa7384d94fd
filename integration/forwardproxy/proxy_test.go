package forwardproxy_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/letsencrypt/challtestsrv"
)

// TestConnectTunnel opens an HTTP/1.1 CONNECT tunnel by name and talks TLS
// to the origin through it; the name is looked up once (A and AAAA) and
// the address that passed is the one dialled.
func TestConnectTunnel(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig)
	conn := e.connect(fmt.Sprintf("allowed.test:%d", e.tlsOrig.port()))
	pool := x509.NewCertPool()
	pool.AddCert(mustParse(t, e.originCA.TLS.Certificate[0]))
	tc := tls.Client(conn, &tls.Config{ServerName: "allowed.test", RootCAs: pool})
	req, _ := http.NewRequest(http.MethodGet, "https://allowed.test/tunnel", nil)
	if err := req.Write(tc); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); !strings.Contains(body, "uri /tunnel") {
		t.Fatalf("origin answered %q", body)
	}
	if n := aQueries(e.dns, "allowed.test"); n != 1 {
		t.Errorf("%d A queries for allowed.test, want 1: the dial must not look the name up again", n)
	}
}

// aQueries counts the A queries the test DNS server answered for a name.
func aQueries(dns *challtestsrv.ChallSrv, name string) int {
	n := 0
	for _, ev := range dns.RequestHistory(name, challtestsrv.DNSRequestEventType) {
		if ev.(challtestsrv.DNSRequestEvent).Question.Qtype == 1 {
			n++
		}
	}
	return n
}

func mustParse(t testing.TB, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAbsoluteForm forwards GET http://... with hop-by-hop headers, the
// headers the Connection header names, Proxy-* and client-identifying
// headers removed; the origin sees the URI's host, never a forged Host.
func TestAbsoluteForm(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig)
	target := fmt.Sprintf("http://allowed.test:%d/page?q=1", e.httpOrig.port())
	resp, _, _ := rawExchange(t, e.plain, "GET "+target+" HTTP/1.1\r\n"+
		"Host: 127.0.0.1:"+e.vars["TRAP4PORT"]+"\r\n"+
		"Proxy-Authorization: "+basic(user, password)+"\r\n"+
		"Proxy-Connection: keep-alive, X-Proxy-Hop\r\n"+
		"Connection: X-Hop\r\n"+
		"X-Hop: secret\r\nX-Proxy-Hop: secret\r\n"+
		"Upgrade: websocket\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"+
		"X-Forwarded-For: 10.1.2.3\r\nVia: 1.1 inner\r\nForwarded: for=10.1.2.3\r\nX-Real-IP: 10.1.2.3\r\n"+
		"Proxy-Custom: x\r\nX-Kept: yes\r\n\r\n")
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s", resp.Status, body)
	}
	for _, want := range []string{"method GET", fmt.Sprintf("host allowed.test:%d", e.httpOrig.port()), "uri /page?q=1", "X-Kept: yes"} {
		if !strings.Contains(body, want) {
			t.Errorf("origin did not see %q:\n%s", want, body)
		}
	}
	for _, gone := range []string{"Proxy-", "X-Hop", "X-Proxy-Hop", "Upgrade", "Keep-Alive", "Te:", "X-Forwarded-For", "Via", "Forwarded", "X-Real-Ip", "secret", "Go-http-client"} {
		if strings.Contains(body, gone) {
			t.Errorf("origin saw %q:\n%s", gone, body)
		}
	}
	if resp.Header.Get("X-Origin-Hop") != "" {
		t.Error("a response header named by the origin's Connection header reached the client")
	}
}

// TestHideClientOff adds X-Forwarded-For and Via when hide_client is off.
func TestHideClientOff(t *testing.T) {
	e := newEnv(t)
	e.start(`{
	auto_https off
	default_bind 127.0.0.1 ::1
}
:${PLAIN} {
	forward_proxy {
		allow_source 127.0.0.1/32
		hide_client off` + proxyOptions + `
	}
}`)
	resp, _, _ := rawExchange(t, e.plain, fmt.Sprintf("GET http://%s:%d/ HTTP/1.1\r\nHost: x\r\n\r\n", allowedIP, e.httpOrig.port()))
	body := readBody(t, resp)
	if !strings.Contains(body, "X-Forwarded-For: 127.0.0.1") || !strings.Contains(body, "Via: 1.1 rampart") {
		t.Errorf("origin saw:\n%s", body)
	}
}

// TestOriginFormGoesToSites checks that sites on the proxy's listener keep
// working: origin-form requests are not proxied, a reverse-proxy site gets
// its own requests (absolute-form ones naming it too), the catch-all site
// with the proxy gets the rest.
func TestOriginFormGoesToSites(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig)
	for _, tc := range []struct{ request, want string }{
		{"GET /rp HTTP/1.1\r\nHost: site.test\r\n\r\n", "uri /rp"},
		{"GET http://site.test:" + portOf(e.plain) + "/rp-abs HTTP/1.1\r\nHost: x\r\n\r\n", "uri /rp-abs"},
		{"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n", "catch-all site"},
		{"GET / HTTP/1.1\r\nHost: allowed.test\r\nProxy-Authorization: " + basic(user, password) + "\r\n\r\n", "catch-all site"},
	} {
		resp, _, _ := rawExchange(t, e.plain, tc.request)
		if body := readBody(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(body, tc.want) {
			t.Errorf("%q: %s %q, want %q", firstLine(tc.request), resp.Status, body, tc.want)
		}
	}
}

// TestPAC serves a proxy auto-config file pointing at the proxy.
func TestPAC(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig)
	resp, err := http.Get("http://" + e.plain + "/proxy.pac")
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.Header.Get("Content-Type") != "application/x-ns-proxy-autoconfig" || !strings.Contains(body, `"PROXY `+e.plain+`"`) {
		t.Errorf("%s %q", resp.Header.Get("Content-Type"), body)
	}
	resp, _, _ = rawExchange(t, e.plain, "GET /proxy.pac HTTP/1.1\r\nHost: a\"b\r\n\r\n")
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a Host that is no host name: %s", resp.Status)
	}
}

// TestAccessLog checks the forward_proxy fields of the access log and the
// user placeholder (user_id).
func TestAccessLog(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig)
	conn := e.connect(fmt.Sprintf("allowed.test:%d", e.echo.port()))
	msg := strings.Repeat("x", 1000)
	if _, err := io.WriteString(conn, msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	resp, _, _ := rawExchange(t, e.plain, fmt.Sprintf("CONNECT %s:25 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n", allowedIP, basic(user, password)))
	resp.Body.Close()
	var entries []map[string]any
	deadline := time.Now().Add(5 * time.Second)
	for len(entries) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		entries = nil
		data, _ := os.ReadFile(e.access)
		for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["forward_proxy"] != nil {
				entries = append(entries, m)
			}
		}
	}
	if len(entries) < 2 {
		t.Fatalf("%d access log entries with forward_proxy fields", len(entries))
	}
	// the tunnel's entry is written when it closes, maybe after the refusal
	slices.SortFunc(entries, func(a, b map[string]any) int {
		return strings.Compare(a["forward_proxy"].(map[string]any)["decision"].(string), b["forward_proxy"].(map[string]any)["decision"].(string))
	})
	fp := entries[0]["forward_proxy"].(map[string]any)
	for k, want := range map[string]any{
		"user": user, "destination_host": "allowed.test", "destination_port": float64(e.echo.port()),
		"resolved": allowedIP, "bytes_up": float64(1000), "bytes_down": float64(1000), "decision": "allowed",
	} {
		if fp[k] != want {
			t.Errorf("forward_proxy.%s = %v, want %v (%v)", k, fp[k], want, fp)
		}
	}
	if d, _ := fp["duration"].(float64); d <= 0 {
		t.Errorf("duration %v", fp["duration"])
	}
	if entries[0]["user_id"] != user {
		t.Errorf("user_id %v: {http.auth.user.id} not set", entries[0]["user_id"])
	}
	refused := entries[1]["forward_proxy"].(map[string]any)
	if refused["decision"] != "connect_ports" || entries[1]["status"] != float64(403) {
		t.Errorf("refused entry %v", entries[1])
	}
	// the refusal is also logged by the handler, for the operator
	logged, data := e.firstRefusal()
	if logged == nil || logged["user"] != user || logged["decision"] != "connect_ports" ||
		logged["destination_host"] != allowedIP || logged["destination_port"] != float64(25) ||
		!strings.HasPrefix(logged["source"].(string), "127.0.0.1:") {
		t.Errorf("refusal log %v\n%s", logged, data)
	}
}

// TestHTTPSProxyHTTP2 uses the HTTPS proxy over HTTP/2 as a browser does:
// CONNECT on a stream, TLS to the origin inside it.
func TestHTTPSProxyHTTP2(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig)
	originPool := x509.NewCertPool()
	originPool.AddCert(mustParse(t, e.originCA.TLS.Certificate[0]))
	body := h2Connect(t, e.secure, e.proxyPool(), fmt.Sprintf("allowed.test:%d", e.tlsOrig.port()), originPool)
	if !strings.Contains(body, "uri /h2") {
		t.Fatalf("origin answered %q", body)
	}
}

// TestAbsoluteFormHTTPS forwards GET https://... by making the TLS
// connection itself, verifying the destination's certificate against the
// system's roots: the test origin's self-signed certificate is refused
// (502, the TLS handshake reached the origin), never passed through.
func TestAbsoluteFormHTTPS(t *testing.T) {
	e := newEnv(t)
	e.start(strings.Replace(baseConfig, "http_ports ${HTTPPORT}", "http_ports ${HTTPPORT} "+fmt.Sprint(e.tlsOrig.port()), 1))
	resp, _, _ := rawExchange(t, e.plain, fmt.Sprintf("GET https://allowed.test:%d/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n", e.tlsOrig.port(), basic(user, password)))
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusBadGateway || strings.Contains(body, "certificate") {
		t.Errorf("%s %q, want 502 without details", resp.Status, body)
	}
	if n := waitAccepts(e.tlsOrig, 1); n != 1 {
		t.Errorf("the origin saw %d connections, want 1 (the refused handshake)", n)
	}
}
