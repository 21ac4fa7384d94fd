// Package forwardproxy_test runs forward_proxy end to end in an in-process
// Caddy with real clients (curl, Python's urllib, headless Chromium, Go's
// own) against loopback origins, a test DNS server (challtestsrv) and trap
// listeners that count every connection they are offered.
package forwardproxy_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/letsencrypt/challtestsrv"
	"golang.org/x/crypto/bcrypt"

	_ "github.com/rampart-edge/caddy-rampart"
	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// allowedIP is the loopback address the test configs allow as a
// destination; every other loopback address stays refused.
const allowedIP = "127.0.0.9"

const (
	user     = "alice"
	password = "wonderland"
)

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	accepts atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepts.Add(1)
	}
	return c, err
}

// listen opens a counting listener on ip at a free port, closed when the
// test ends.
func listen(t testing.TB, ip string) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	t.Cleanup(func() { ln.Close() })
	return &countingListener{Listener: ln}
}

// waitAccepts waits until l accepted want connections (the accept loop
// may run a moment after the client's connect returns), then a little more
// to see any extra one, and returns the count.
func waitAccepts(l *countingListener, want int64) int64 {
	for deadline := time.Now().Add(5 * time.Second); l.accepts.Load() < want && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	return l.accepts.Load()
}

func (l *countingListener) port() int { return l.Addr().(*net.TCPAddr).Port }

// trap is a listener that must never be reached; the test fails at its end
// if anything connected.
func trap(t *testing.T, ln net.Listener) *countingListener {
	t.Helper()
	t.Cleanup(func() { ln.Close() })
	l := &countingListener{Listener: ln}
	go harness.ServeEach(l, func(net.Conn) {})
	t.Cleanup(func() {
		if n := l.accepts.Load(); n != 0 {
			t.Errorf("trap listener %s accepted %d connections: the proxy dialled a refused destination", l.Addr(), n)
		}
	})
	return l
}

// listenWithTraps opens a listener on ip and traps on the same port of
// each trap address, retrying with other ports while one is taken.
func listenWithTraps(t *testing.T, ip string, trapIPs ...string) (*countingListener, []*countingListener) {
	t.Helper()
	for range 50 {
		l := listen(t, ip)
		var lns []net.Listener
		for _, tip := range trapIPs {
			ln, err := net.Listen("tcp", net.JoinHostPort(tip, fmt.Sprint(l.port())))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) == len(trapIPs) {
			traps := make([]*countingListener, len(lns))
			for i, ln := range lns {
				traps[i] = trap(t, ln)
			}
			return l, traps
		}
		l.Close()
		for _, ln := range lns {
			ln.Close()
		}
	}
	t.Fatalf("no port free on %s and %v", ip, trapIPs)
	return nil, nil
}

// serveHTTP serves h on l (TLS when cert is set) until the test ends.
func serveHTTP(t testing.TB, l net.Listener, h http.Handler, cert *tls.Certificate) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	if cert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
		go srv.ServeTLS(l, "", "")
	} else {
		go srv.Serve(l)
	}
	t.Cleanup(func() { srv.Close() })
}

// echoHeaders answers with the request's method, Host and headers, one a
// line, and a page title for browsers.
func echoHeaders(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html")
	w.Header().Set("Connection", "X-Origin-Hop")
	w.Header().Set("X-Origin-Hop", "must not reach the client")
	fmt.Fprintf(w, "<title>origin page</title>\nmethod %s\nhost %s\nuri %s\n", r.Method, r.Host, r.RequestURI)
	for k, vv := range r.Header {
		for _, v := range vv {
			fmt.Fprintf(w, "%s: %s\n", k, v)
		}
	}
}

// serveEcho echoes every connection's bytes back until it closes.
func serveEcho(l net.Listener) {
	harness.ServeEach(l, func(c net.Conn) { _, _ = io.Copy(c, c) })
}

// dnsServer runs challtestsrv on a free loopback port; names it does not
// know get no address.
func dnsServer(t testing.TB) (*challtestsrv.ChallSrv, string) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	srv, err := challtestsrv.New(challtestsrv.Config{DNSAddrs: []string{addr}, Log: log.New(io.Discard, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetDefaultDNSIPv4("")
	srv.SetDefaultDNSIPv6("")
	go srv.Run()
	t.Cleanup(srv.Shutdown)
	// wait for the TCP side; UDP starts with it
	harness.WaitListening(t, addr, 5*time.Second)
	return srv, addr
}

// env is the world of one test: origins, traps, DNS, certificates and a
// running Caddy with the proxies of baseConfig.
type env struct {
	t        *testing.T
	dns      *challtestsrv.ChallSrv
	dnsAddr  string
	originCA harness.Certificate // the HTTPS origin's certificate (also its CA)
	proxyCA  harness.Certificate // the HTTPS proxy's certificate
	tlsOrig  *countingListener   // HTTPS page on allowedIP
	httpOrig *countingListener   // header echo on allowedIP
	echo     *countingListener   // TCP echo on allowedIP
	trap4    *countingListener   // 127.0.0.1 on the echo origin's port, never allowed
	trap6    *countingListener   // [::1] on the echo origin's port, never allowed
	trapHTTP *countingListener   // 127.0.0.1 on the HTTP origin's port, never allowed
	trapPort *countingListener   // allowedIP, port not in connect_ports
	blocked  string              // block list file
	access   string              // access log file of the plain proxy
	plain    string              // host:port of the plain-HTTP proxy (basic_auth)
	sources  string              // host:port of the proxy that admits 10.0.0.0/8 only
	secure   string              // host:port of the HTTPS proxy (basic_auth, or 127.0.0.1 without credentials)
	hash     string
	vars     map[string]string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t}
	e.dns, e.dnsAddr = dnsServer(t)
	for name, ips := range map[string][]string{
		"allowed.test": {allowedIP},
		"ten.test":     {"10.0.0.1"},
		"mixed.test":   {allowedIP, "10.0.0.1"},
		"trap.test":    {"127.0.0.1"},
		"blocked.test": {allowedIP},
		"meta.test":    {"169.254.169.254"},
	} {
		e.dns.AddDNSARecord(name, ips)
	}
	e.dns.AddDNSAAAARecord("six.test", []string{"::1"})
	e.originCA = harness.SelfSigned(t, "origin", "allowed.test", "blocked.test", "rebind.test")
	e.proxyCA = harness.SelfSigned(t, "proxy", "proxy.test", "localhost")
	e.tlsOrig = listen(t, allowedIP)
	serveHTTP(t, e.tlsOrig, http.HandlerFunc(echoHeaders), &e.originCA.TLS)
	// the traps share the origins' ports, which the proxies allow: only
	// the address can refuse them
	var traps []*countingListener
	e.httpOrig, traps = listenWithTraps(t, allowedIP, "127.0.0.1")
	e.trapHTTP = traps[0]
	serveHTTP(t, e.httpOrig, http.HandlerFunc(echoHeaders), nil)
	e.echo, traps = listenWithTraps(t, allowedIP, "127.0.0.1", "::1")
	e.trap4, e.trap6 = traps[0], traps[1]
	go serveEcho(e.echo)
	port0, err := net.Listen("tcp", net.JoinHostPort(allowedIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	e.trapPort = trap(t, port0)
	// not t.TempDir: Caddy's log writers may close their files a moment
	// after Caddy stops
	dir, err := os.MkdirTemp("", "rampart-forwardproxy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 20 {
			if os.RemoveAll(dir) == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	e.blocked = filepath.Join(dir, "blocked-hosts.txt")
	writeFile(t, e.blocked, "# test block list\nblocked.test\n*.blocked-wild.test\n")
	e.access = filepath.Join(dir, "access.log")
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	e.hash = string(hash)
	e.plain = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	e.sources = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	e.secure = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	e.vars = map[string]string{
		"PLAIN":     portOf(e.plain),
		"SOURCES":   portOf(e.sources),
		"SECURE":    portOf(e.secure),
		"ALLOWED":   allowedIP,
		"PORTS":     fmt.Sprintf("%d %d %d", e.tlsOrig.port(), e.httpOrig.port(), e.echo.port()),
		"HTTPPORT":  fmt.Sprint(e.httpOrig.port()),
		"DNS":       e.dnsAddr,
		"BLOCKED":   e.blocked,
		"ACCESS":    e.access,
		"REFUSALS":  filepath.Join(dir, "refusals.log"),
		"HASH":      e.hash,
		"CERT":      e.proxyCA.CertFile,
		"KEY":       e.proxyCA.KeyFile,
		"TRAP4PORT": fmt.Sprint(e.trap4.port()),
	}
	return e
}

// expand replaces ${NAME} with the env's values.
func (e *env) expand(s string) string {
	return os.Expand(s, func(k string) string {
		v, ok := e.vars[k]
		if !ok {
			e.t.Fatalf("config uses unknown ${%s}", k)
		}
		return v
	})
}

// proxyOptions are the options every test proxy shares: only allowedIP
// may be reached, on the origins' ports, names resolve through the test DNS.
const proxyOptions = `
		allow_destination ${ALLOWED}/32
		connect_ports ${PORTS}
		http_ports ${HTTPPORT}
		resolvers ${DNS}
		block_list ${BLOCKED}
		block_list_interval 50ms
		idle_timeout 3s
		dial_timeout 2s`

// globalOptions are the global options of the test configs: loopback
// only, HTTP/1.1 and HTTP/2, and forward_proxy's own log (refusals) in a
// file of its own.
const globalOptions = `
	auto_https off
	default_bind 127.0.0.1 ::1
	servers {
		protocols h1 h2
	}
	log refusals {
		output file ${REFUSALS}
		format json
		include http.handlers.forward_proxy
	}`

// baseConfig has three proxies: plain HTTP with credentials (with a
// reverse-proxy site and a catch-all site for origin-form requests on the
// same listener), one that admits only
// 10.0.0.0/8 by source, and an HTTPS one (HTTP/1.1 and HTTP/2) that
// admits loopback clients by source or alice by password.
const baseConfig = `{` + globalOptions + `
}

http://site.test:${PLAIN} {
	reverse_proxy ${ALLOWED}:${HTTPPORT}
}

:${PLAIN} {
	log {
		output file ${ACCESS}
		format json
	}
	forward_proxy {
		basic_auth {
			alice ${HASH}
		}
		pac /proxy.pac` + proxyOptions + `
	}
	respond "catch-all site"
}

:${SOURCES} {
	forward_proxy {
		allow_source 10.0.0.0/8` + proxyOptions + `
	}
}

:${SECURE} {
	tls ${CERT} ${KEY}
	forward_proxy {
		allow_source 127.0.0.1/32 ::1/128
		basic_auth {
			alice ${HASH}
		}` + proxyOptions + `
	}
}
`

// start runs Caddy with the config.
func (e *env) start(config string) *harness.Caddy {
	e.t.Helper()
	expanded := e.expand(config)
	c := harness.RunCaddyfile(e.t, expanded)
	for _, a := range []string{e.plain, e.sources, e.secure} {
		if strings.Contains(expanded, ":"+portOf(a)+" {") {
			harness.WaitListening(e.t, a, 5*time.Second)
		}
	}
	return c
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func basic(u, p string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p))
}

// rawExchange writes a request as bytes to addr and reads one response. The
// connection is returned open (for tunnels) with its reader.
func rawExchange(t testing.TB, addr, request string) (*http.Response, net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// long enough for Caddy's fake bcrypt comparison (cost 14) for unknown
	// users under the race detector: 24 s measured at load average 10-14
	// on the 2-core machine, over 60 s at times
	_ = conn.SetDeadline(time.Now().Add(150 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	method, _, _ := strings.Cut(request, " ")
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response to %q: %v", firstLine(request), err)
	}
	return resp, conn, br
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

// connect opens a CONNECT tunnel through the plain proxy with alice's
// credentials and returns it, failing the test unless the proxy says 200.
func (e *env) connect(target string) net.Conn {
	e.t.Helper()
	resp, conn, br := rawExchange(e.t, e.plain, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\nProxy-Authorization: "+basic(user, password)+"\r\n\r\n")
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("CONNECT %s: %s %s", target, resp.Status, body)
	}
	if br.Buffered() != 0 {
		e.t.Fatalf("CONNECT %s: %d bytes after the response", target, br.Buffered())
	}
	_ = conn.SetDeadline(time.Time{})
	return conn
}

// firstRefusal returns the first "request refused" line of forward_proxy's
// own log (globalOptions), or nil, and the log's text.
func (e *env) firstRefusal() (map[string]any, string) {
	data, _ := os.ReadFile(e.vars["REFUSALS"])
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		var logged map[string]any
		if json.Unmarshal([]byte(line), &logged) == nil && logged["msg"] == "forward proxy request refused" {
			return logged, string(data)
		}
	}
	return nil, string(data)
}

// proxyPool trusts the HTTPS proxy's certificate.
func (e *env) proxyPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(mustParse(e.t, e.proxyCA.TLS.Certificate[0]))
	return pool
}

func readBody(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
