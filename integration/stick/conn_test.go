package stick_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// waitTLS waits until the internal certificate is in place and a handshake
// completes.
func waitTLS(t *testing.T, addr string, conf *tls.Config) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, conf)
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("TLS handshake with %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// wantRefused fails unless a TLS handshake was refused: an error, and not a
// timeout (a hung handshake is not a rejection).
func wantRefused(t *testing.T, err error, who string) {
	t.Helper()
	if err == nil {
		t.Fatalf("TLS handshake completed for %s", who)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("TLS handshake for %s hung instead of being refused: %v", who, err)
	}
}

// TestAdminBanEffectiveNextRequestAndConnection bans 127.0.0.1 through the
// admin API: the next request on an already open keep-alive connection gets
// 403 from `stick per_ip banned`, and the next TLS connection to the
// listener wrapper's server is closed before its handshake.
func TestAdminBanEffectiveNextRequestAndConnection(t *testing.T) {
	httpPort, tlsPort := harness.FreePort(t), harness.FreePort(t)
	origin := startHTTPOrigin(t, "origin")
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	auto_https disable_redirects
	skip_install_trust
	stick_table per_ip {
		type ip
		size 1k
		expire 1m
		store conn_cnt conn_cur conn_rate(10s) http_req_cnt gpc0 ban
	}
	servers :%[2]d {
		listener_wrappers {
			stick per_ip {
				reject gpc0 gt 0
				reject banned
			}
			tls
		}
	}
}

http://127.0.0.1:%[1]d {
	track per_ip {client_ip}
	@banned stick per_ip banned
	respond @banned 403
	reverse_proxy %[3]s
}

https://localhost:%[2]d {
	tls internal
	reverse_proxy %[3]s
}
`, httpPort, tlsPort, origin))

	hc := client()
	url := fmt.Sprintf("http://127.0.0.1:%d/", httpPort)
	if status, _, body := get(t, hc, url); status != 200 || body != "origin" {
		t.Fatalf("before the ban: %d %q", status, body)
	}
	tlsConf := &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}
	waitTLS(t, fmt.Sprintf("127.0.0.1:%d", tlsPort), tlsConf)

	adminJSON(t, c, http.MethodPut, "/stick-tables/per_ip/127.0.0.1", `{"ban": "1m"}`, 200)

	// Same keep-alive connection, next request.
	if status, _, _ := get(t, hc, url); status != http.StatusForbidden {
		t.Fatalf("next request after the ban: %d, want 403", status)
	}
	// Next connection: closed by the listener before any TLS handshake.
	_, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", tlsPort), tlsConf)
	wantRefused(t, err, "a client banned through the admin API")
	if !connClosedWithoutData(t, fmt.Sprintf("127.0.0.1:%d", tlsPort)) {
		t.Fatal("a banned client's TCP connection stayed open")
	}
	// Lifting the ban through the admin API lets it back in.
	adminJSON(t, c, http.MethodPut, "/stick-tables/per_ip/127.0.0.1", `{"ban": 0}`, 200)
	if status, _, _ := get(t, hc, url); status != 200 {
		t.Fatalf("after lifting the ban: %d", status)
	}
}

// TestListenerRejectsBeforeTLSHandshake shows the reject happens right after
// accept: a raw TCP connection that never sends a ClientHello is closed at
// once (a TLS server would otherwise wait for the ClientHello), no byte of a
// handshake comes back, and the rejection is counted under layer=listener.
// An HTTP rule's gpc0 flag stops new connections too.
func TestListenerRejectsBeforeTLSHandshake(t *testing.T) {
	httpPort, tlsPort := harness.FreePort(t), harness.FreePort(t)
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	auto_https disable_redirects
	stick_table per_ip {
		type ip
		size 1k
		expire 1m
		store conn_cnt conn_cur conn_rate(10s) http_req_cnt gpc0
	}
	servers :%[2]d {
		listener_wrappers {
			stick per_ip {
				reject gpc0 gt 0
				reject conn_cur gt 2
			}
			tls
		}
	}
}

http://127.0.0.1:%[1]d {
	track per_ip {client_ip}
	@flag path /flag-me
	stick_inc @flag per_ip gpc0
	respond "ok"
}

https://localhost:%[2]d {
	tls internal
	respond "secure"
}
`, httpPort, tlsPort))
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", tlsPort)
	const listenerRejections = `rampart_stick_rejections_total{layer="listener",table="per_ip"}`
	before := metric(t, c, listenerRejections)

	// conn_cur gt 2: two idle connections are held, the third is refused.
	var held []net.Conn
	for range 2 {
		conn, err := net.Dial("tcp", tlsAddr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, conn)
	}
	time.Sleep(100 * time.Millisecond) // let the server accept both
	start := time.Now()
	if !connClosedWithoutData(t, tlsAddr) {
		t.Fatal("third concurrent connection not rejected (reject conn_cur gt 2)")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("rejection took %v", took)
	}
	for _, h := range held {
		h.Close()
	}
	time.Sleep(100 * time.Millisecond)
	e, _ := adminEntry(t, c, "per_ip", "127.0.0.1")
	if e.Values["conn_cnt"] != 3 || e.Values["conn_cur"] != 0 {
		t.Errorf("after closing: %v, want conn_cnt 3 and conn_cur 0", e.Values)
	}

	// A handshake works while the client is not flagged...
	tlsConf := &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}
	waitTLS(t, tlsAddr, tlsConf)
	// ...and not after an HTTP rule set gpc0.
	if status, _, _ := get(t, client(), fmt.Sprintf("http://127.0.0.1:%d/flag-me", httpPort)); status != 200 {
		t.Fatalf("flag request: %d", status)
	}
	raw, err := net.Dial("tcp", tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	hello := tls.Client(raw, tlsConf)
	_ = hello.SetDeadline(time.Now().Add(3 * time.Second))
	wantRefused(t, hello.Handshake(), "a client flagged with gpc0")
	if got := metric(t, c, listenerRejections) - before; got != 2 {
		t.Errorf("listener rejections counted %v, want 2", got)
	}
}

// TestLayer4Tracking tracks a TCP route with the layer4 handler (reject
// conn_cur gt 2) and refuses flagged clients with the layer4 stick matcher.
func TestLayer4Tracking(t *testing.T) {
	l4Port := harness.FreePort(t)
	origin := startEchoOrigin(t)
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	stick_table tcp_ip {
		type ip
		size 1k
		expire 1m
		store conn_cnt conn_cur conn_rate(10s) bytes_in_cnt bytes_out_cnt gpc0
	}
	layer4 {
		127.0.0.1:%d {
			@flagged stick tcp_ip gpc0 gt 0
			route @flagged {
				close
			}
			route {
				track tcp_ip {
					reject conn_cur gt 2
				}
				proxy %s
			}
		}
	}
}
`, l4Port, origin))
	addr := fmt.Sprintf("127.0.0.1:%d", l4Port)
	const l4Rejections = `rampart_stick_rejections_total{layer="layer4",table="tcp_ip"}`
	before := metric(t, c, l4Rejections)
	echo := func(conn net.Conn, msg string) {
		t.Helper()
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo through layer4: %q %v", buf, err)
		}
	}
	var conns []net.Conn
	for i := range 2 {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		echo(conn, fmt.Sprintf("hello %d", i))
	}
	e, _ := adminEntry(t, c, "tcp_ip", "127.0.0.1")
	if e.Values["conn_cur"] != 2 || e.Use != 2 {
		t.Errorf("two open TCP connections: %+v", e)
	}
	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = third.SetDeadline(time.Now().Add(3 * time.Second))
	_, _ = io.WriteString(third, "let me in")
	if n, err := third.Read(make([]byte, 16)); err == nil {
		t.Fatalf("third connection (conn_cur 3 > 2) got %d bytes back", n)
	}
	third.Close()
	for _, conn := range conns {
		conn.Close()
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		e, _ = adminEntry(t, c, "tcp_ip", "127.0.0.1")
		if e.Values["conn_cur"] == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if e.Values["conn_cnt"] != 3 || e.Values["conn_cur"] != 0 || e.Values["bytes_in_cnt"] != 14 || e.Values["bytes_out_cnt"] != 14 {
		t.Errorf("after closing: %v, want conn_cnt 3, conn_cur 0, 14 bytes each way", e.Values)
	}

	adminJSON(t, c, http.MethodPut, "/stick-tables/tcp_ip/127.0.0.1", `{"gpc0": 1}`, 200)
	flagged, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer flagged.Close()
	_ = flagged.SetDeadline(time.Now().Add(3 * time.Second))
	_, _ = io.WriteString(flagged, "hi")
	if n, err := flagged.Read(make([]byte, 16)); err == nil {
		t.Fatalf("flagged client got %d bytes through", n)
	}
	// The third connection was rejected by the track handler; the flagged
	// one was closed by a route matched by the stick matcher (not counted).
	if got := metric(t, c, l4Rejections) - before; got != 1 {
		t.Errorf("layer4 rejections counted %v, want 1", got)
	}
}

// TestLayer4TrackBySNI keys a layer4 table on {l4.tls.server_name}, as the
// passthrough option does: after the tls matcher, each ClientHello's SNI
// gets its own entry, and `reject conn_cnt gt 2` refuses the third
// connection for one name while another name still passes.
func TestLayer4TrackBySNI(t *testing.T) {
	l4Port := harness.FreePort(t)
	origin := startEchoOrigin(t)
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	stick_table per_sni {
		type string
		size 100
		store conn_cnt conn_cur
	}
	layer4 {
		127.0.0.1:%d {
			@tls tls
			route @tls {
				track per_sni {l4.tls.server_name} {
					reject conn_cnt gt 2
				}
				proxy %s
			}
		}
	}
}
`, l4Port, origin))
	addr := fmt.Sprintf("127.0.0.1:%d", l4Port)
	// hello sends a ClientHello for name and reports whether it came back
	// (the origin echoes: the proxied connection got through).
	hello := func(name string) bool {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		tc := tls.Client(conn, &tls.Config{ServerName: name, InsecureSkipVerify: true})
		err = tc.Handshake()
		// The echoed ClientHello is not a ServerHello: the client sees a
		// record it did not expect; a refused connection gives EOF/reset.
		t.Logf("%s: %v", name, err)
		return err != nil && !isClosed(err)
	}
	for i := range 2 {
		if !hello("a.example") {
			t.Fatalf("connection %d for a.example did not get through", i+1)
		}
	}
	if hello("a.example") {
		t.Fatal("third connection for a.example got through (reject conn_cnt gt 2)")
	}
	if !hello("b.example") {
		t.Fatal("b.example refused: names must have separate entries")
	}
	e, ok := adminEntry(t, c, "per_sni", "a.example")
	if !ok || e.Values["conn_cnt"] != 3 {
		t.Errorf("a.example entry: %+v, want conn_cnt 3", e)
	}
	if e, ok := adminEntry(t, c, "per_sni", "b.example"); !ok || e.Values["conn_cnt"] != 1 {
		t.Errorf("b.example entry: %+v", e)
	}
}

// isClosed reports whether err means the peer closed the connection.
func isClosed(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	return strings.Contains(err.Error(), "connection reset")
}

// proxyV2Header is a PROXY protocol v2 header for a TCP/IPv4 connection
// from src to 127.0.0.1:443 (no TLVs).
func proxyV2Header(src [4]byte, srcPort uint16) []byte {
	h := []byte("\r\n\r\n\x00\r\nQUIT\n")
	h = append(h, 0x21, 0x11, 0, 12)
	h = append(h, src[:]...)
	h = append(h, 127, 0, 0, 1)
	return append(h, byte(srcPort>>8), byte(srcPort), 1, 187)
}

// TestListenerBehindProxyV2 places the stick wrapper after proxy_v2: it
// keys on the client address the PROXY header carries, refuses a banned
// client before its TLS handshake, and a trusted peer that has not sent its
// header yet does not hold up the accept loop.
func TestListenerBehindProxyV2(t *testing.T) {
	port := harness.FreePort(t)
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	auto_https disable_redirects
	stick_table per_ip {
		type ip
		size 1k
		expire 1m
		store conn_cnt conn_cur ban
	}
	servers :%[1]d {
		listener_wrappers {
			proxy_v2 {
				trust 127.0.0.1/32
				untrusted reject
				timeout 5s
			}
			stick per_ip {
				reject banned
			}
			tls
		}
	}
}

https://localhost:%[1]d {
	tls internal
	respond "hi"
}
`, port))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	tlsConf := &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}
	// handshake dials, sends a PROXY header for src and shakes hands.
	handshake := func(src [4]byte) error {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(4 * time.Second))
		if _, err := conn.Write(proxyV2Header(src, 40000)); err != nil {
			t.Fatal(err)
		}
		return tls.Client(conn, tlsConf).Handshake()
	}
	deadline := time.Now().Add(10 * time.Second)
	for handshake([4]byte{192, 0, 2, 10}) != nil { // the internal certificate may take a moment
		if time.Now().After(deadline) {
			t.Fatal("no TLS handshake through proxy_v2 + stick")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A trusted peer that connects and stays silent...
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	time.Sleep(50 * time.Millisecond)
	// ...does not delay the next client.
	start := time.Now()
	if err := handshake([4]byte{192, 0, 2, 11}); err != nil {
		t.Fatalf("handshake while another peer is silent: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("a silent peer held up the next connection for %v", took)
	}

	adminJSON(t, c, http.MethodPut, "/stick-tables/per_ip/192.0.2.9", `{"ban": "1m"}`, 200)
	start = time.Now()
	wantRefused(t, handshake([4]byte{192, 0, 2, 9}), "a client banned by the address of its PROXY header")
	if err := handshake([4]byte{192, 0, 2, 10}); err != nil {
		t.Fatalf("unbanned client refused: %v", err)
	}
	if e, ok := adminEntry(t, c, "per_ip", "192.0.2.9"); !ok || e.Values["conn_cnt"] != 1 {
		t.Errorf("banned client's entry: %+v", e)
	}
	if _, ok := adminEntry(t, c, "per_ip", "127.0.0.1"); ok {
		t.Error("the load balancer's own address was tracked instead of the client's")
	}
}
