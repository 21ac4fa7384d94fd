package forwardproxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// TestBlockListReload changes the block list file while the proxy runs: a
// new name is refused, a removed one allowed again, and a bad version is
// refused with the previous list kept.
func TestBlockListReload(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig)
	status := func(name string) int {
		resp, _, _ := rawExchange(t, e.plain, fmt.Sprintf("CONNECT %s:%d HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n", name, e.echo.port(), basic(user, password)))
		resp.Body.Close()
		return resp.StatusCode
	}
	waitStatus := func(name string, want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for got := status(name); got != want; got = status(name) {
			if time.Now().After(deadline) {
				t.Fatalf("CONNECT %s: %d, want %d after the block list changed", name, got, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if got := status("allowed.test"); got != http.StatusOK {
		t.Fatalf("allowed.test before: %d", got)
	}
	writeFile(t, e.blocked, "allowed.test\n")
	waitStatus("allowed.test", http.StatusForbidden)
	waitStatus("blocked.test", http.StatusOK) // no longer listed
	writeFile(t, e.blocked, "allowed.test\nthis is not a name\n")
	time.Sleep(300 * time.Millisecond) // several checks of the file
	if got := status("allowed.test"); got != http.StatusForbidden {
		t.Errorf("after a bad block list: %d; the previous list must stay in use", got)
	}
	writeFile(t, e.blocked, "# empty\n")
	waitStatus("allowed.test", http.StatusOK)
}

// TestIdleTimeout closes a tunnel in which nothing moved for idle_timeout
// (3s in the test config), while a tunnel that keeps talking stays open.
func TestIdleTimeout(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig)
	idle := e.connect(fmt.Sprintf("allowed.test:%d", e.echo.port()))
	busy := e.connect(fmt.Sprintf("allowed.test:%d", e.echo.port()))
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_ = idle.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.ReadAll(idle)
		done <- err
	}()
	buf := make([]byte, 4)
	for time.Since(start) < 5*time.Second {
		if _, err := io.WriteString(busy, "ping"); err != nil {
			t.Fatalf("busy tunnel closed after %s: %v", time.Since(start), err)
		}
		_ = busy.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(busy, buf); err != nil {
			t.Fatalf("busy tunnel closed after %s: %v", time.Since(start), err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("idle tunnel: %v (not closed by the proxy)", err)
		}
		if d := time.Since(start); d < 3*time.Second {
			t.Errorf("idle tunnel closed after %s, before the idle timeout", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("idle tunnel still open")
	}
}

// TestIdleTimeoutOneWay keeps a tunnel busy in one direction only: the
// destination sends a byte every 400 ms for 6 s (twice idle_timeout) and
// the client never sends; traffic either way keeps the tunnel open, so the
// client gets every byte and then the destination's end.
func TestIdleTimeoutOneWay(t *testing.T) {
	e := newEnv(t)
	ticker := listen(t, allowedIP)
	const ticks = 10
	go harness.ServeEach(ticker, func(c net.Conn) {
		for range ticks {
			time.Sleep(400 * time.Millisecond)
			if _, err := c.Write([]byte{'t'}); err != nil {
				return
			}
		}
	})
	e.vars["PORTS"] += fmt.Sprintf(" %d", ticker.port())
	e.start(baseConfig)
	conn := e.connect(fmt.Sprintf("%s:%d", allowedIP, ticker.port()))
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	start := time.Now()
	got, err := io.ReadAll(conn)
	if err != nil || len(got) != ticks {
		t.Fatalf("read %d of %d bytes in %s (%v): the tunnel was closed while the destination was sending", len(got), ticks, time.Since(start), err)
	}
}

// TestSlowClientHoldsOnlyItsTunnel fills a tunnel whose client never reads
// (the origin echoes into a full socket) and checks that other tunnels
// and requests keep working meanwhile.
func TestSlowClientHoldsOnlyItsTunnel(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig)
	slow := e.connect(fmt.Sprintf("allowed.test:%d", e.echo.port()))
	chunk := make([]byte, 1<<20)
	written := 0
	for written < 64<<20 {
		_ = slow.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := slow.Write(chunk)
		written += n
		if err != nil {
			break // the tunnel is full: the slow client's buffers are
		}
	}
	if written >= 64<<20 {
		t.Fatalf("the tunnel took %d MiB without blocking: nothing is stuck", written>>20)
	}
	for i := range 3 {
		c := e.connect(fmt.Sprintf("allowed.test:%d", e.echo.port()))
		if _, err := io.WriteString(c, "ping"); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("tunnel %d beside a stuck one: %v", i, err)
		}
		c.Close()
	}
	resp, _, _ := rawExchange(t, e.plain, fmt.Sprintf("GET http://allowed.test:%d/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n", e.httpOrig.port(), basic(user, password)))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("absolute-form beside a stuck tunnel: %s", resp.Status)
	}
	resp.Body.Close()
	t.Logf("the stuck tunnel took %d MiB before blocking", written>>20)
}

// TestMaxHeaderSize refuses forwarded requests whose header is larger than
// max_header_size with 431, and origin responses with a larger header with
// 502.
func TestMaxHeaderSize(t *testing.T) {
	e := newEnv(t)
	big := listen(t, allowedIP)
	serveHTTP(t, big, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", strings.Repeat("b", 8<<10))
		w.WriteHeader(http.StatusOK)
	}), nil)
	e.vars["BIGPORT"] = fmt.Sprint(big.port())
	e.start(`{
	auto_https off
	default_bind 127.0.0.1 ::1
}
:${PLAIN} {
	forward_proxy {
		allow_source 127.0.0.1/32
		max_header_size 4KiB
		allow_destination ${ALLOWED}/32
		http_ports ${HTTPPORT} ${BIGPORT}
	}
}`)
	resp, _, _ := rawExchange(t, e.plain, fmt.Sprintf("GET http://%s:%d/ HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", allowedIP, e.httpOrig.port(), strings.Repeat("a", 5<<10)))
	if body := readBody(t, resp); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || !strings.Contains(body, "max_header_size") {
		t.Errorf("big request header: %s %q", resp.Status, body)
	}
	if n := e.httpOrig.accepts.Load(); n != 0 {
		t.Errorf("the refused request reached the origin")
	}
	resp, _, _ = rawExchange(t, e.plain, fmt.Sprintf("GET http://%s:%d/ HTTP/1.1\r\nHost: x\r\n\r\n", allowedIP, big.port()))
	if body := readBody(t, resp); resp.StatusCode != http.StatusBadGateway || strings.Contains(body, "bbbb") {
		t.Errorf("big response header: %s %q", resp.Status, body)
	}
}

// TestHTTP2Refusals refuses HTTP/2 CONNECT streams to loopback and to an
// unlisted port on one connection, and the connection stays usable.
func TestHTTP2Refusals(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig)
	cc := h2Dial(t, e.secure, e.proxyPool())
	for target, want := range map[string]int{
		fmt.Sprintf("127.0.0.1:%d", e.echo.port()):         403,
		fmt.Sprintf("[::1]:%d", e.echo.port()):             403,
		fmt.Sprintf("2130706433:%d", e.echo.port()):        403,
		fmt.Sprintf("%s:%d", allowedIP, e.trapPort.port()): 403,
		fmt.Sprintf("allowed.test:%d", e.echo.port()):      200,
	} {
		resp, stream := h2Open(t, cc, target, nil)
		if resp.StatusCode != want {
			t.Errorf("HTTP/2 CONNECT %s: %s, want %d", target, resp.Status, want)
		}
		if want == 200 {
			if _, err := io.WriteString(stream, "ping"); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(stream, buf); err != nil || string(buf) != "ping" {
				t.Errorf("echo through the HTTP/2 tunnel: %q %v", buf, err)
			}
		}
		stream.Close()
	}
}

// stickConfig limits every client address to two open tunnels with a stick
// table, on the plain (HTTP/1.1) and the HTTPS (HTTP/2) proxy.
const stickConfig = `{
	auto_https off
	default_bind 127.0.0.1 ::1
	stick_table per_ip {
		type ip
		size 1k
		expire 1m
		store http_req_cnt req_cur bytes_in_cnt bytes_out_cnt
	}
}
(limited) {
	track per_ip {client_ip}
	@busy stick per_ip req_cur gt 2
	tarpit @busy 0s 429
}
:${PLAIN} {
	import limited
	forward_proxy {
		allow_source 127.0.0.1/32` + proxyOptions + `
	}
}
:${SECURE} {
	tls ${CERT} ${KEY}
	import limited
	forward_proxy {
		allow_source 127.0.0.1/32` + proxyOptions + `
	}
}
`

// TestStickConcurrentTunnels holds two tunnels open: the third is refused
// by the stick table (429, no connection), and allowed again when one
// closes. HTTP/2 tunnels count their bytes both ways in the table.
func TestStickConcurrentTunnels(t *testing.T) {
	e := newEnv(t)
	c := e.start(stickConfig)
	target := fmt.Sprintf("allowed.test:%d", e.echo.port())
	open := func() (*http.Response, func()) {
		resp, conn, _ := rawExchange(t, e.plain, "CONNECT "+target+" HTTP/1.1\r\nHost: x\r\n\r\n")
		return resp, func() { conn.Close() }
	}
	r1, close1 := open()
	r2, close2 := open()
	defer close2()
	if r1.StatusCode != 200 || r2.StatusCode != 200 {
		t.Fatalf("first tunnels: %s %s", r1.Status, r2.Status)
	}
	r3, close3 := open()
	close3()
	if r3.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third tunnel: %s, want 429", r3.Status)
	}
	if n := waitAccepts(e.echo, 2); n != 2 {
		t.Errorf("origin saw %d connections, want 2", n)
	}
	close1()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, closeIt := open()
		closeIt()
		if r.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after closing a tunnel: %s", r.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
	close2()

	// HTTP/2: the stream's bytes pass through track's counters
	waitReqCur(t, c, 0)
	before := entryValues(t, c)
	cc := h2Dial(t, e.secure, e.proxyPool())
	resp, stream := h2Open(t, cc, target, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("HTTP/2 tunnel: %s", resp.Status)
	}
	msg := strings.Repeat("y", 5000)
	if _, err := io.WriteString(stream, msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(stream, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	stream.Close()
	waitReqCur(t, c, 0)
	after := entryValues(t, c)
	if in := after["bytes_in_cnt"] - before["bytes_in_cnt"]; in < 5000 {
		t.Errorf("bytes_in_cnt grew by %d, want >= 5000 (%v)", in, after)
	}
	if out := after["bytes_out_cnt"] - before["bytes_out_cnt"]; out < 5000 {
		t.Errorf("bytes_out_cnt grew by %d, want >= 5000 (%v)", out, after)
	}
}

func entryValues(t *testing.T, c interface {
	AdminRequest(string, string, io.Reader) (int, string)
}) map[string]uint64 {
	t.Helper()
	status, body := c.AdminRequest(http.MethodGet, "/stick-tables/per_ip/127.0.0.1", nil)
	if status != 200 {
		t.Fatalf("entry: %d %s", status, body)
	}
	var e struct {
		Values map[string]uint64 `json:"values"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatal(err)
	}
	return e.Values
}

func waitReqCur(t *testing.T, c interface {
	AdminRequest(string, string, io.Reader) (int, string)
}, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for entryValues(t, c)["req_cur"] != want {
		if time.Now().After(deadline) {
			t.Fatalf("req_cur stays %d", entryValues(t, c)["req_cur"])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStickPerUser keys a stick table on the proxy user inside the
// forward_proxy limits block: alice may hold one tunnel, her second is
// refused (429, no connection) while bob's goes through, and the table's
// entry for alice counts her open tunnel.
func TestStickPerUser(t *testing.T) {
	e := newEnv(t)
	c := e.start(`{
	auto_https off
	default_bind 127.0.0.1 ::1
	stick_table per_user {
		type string
		size 1k
		expire 1m
		store http_req_cnt req_cur
	}
}
:${PLAIN} {
	forward_proxy {
		basic_auth {
			alice ${HASH}
			bob ${HASH}
		}
		limits {
			track per_user {http.auth.user.id}
			@busy stick per_user req_cur gt 1
			tarpit @busy 0s 429
		}` + proxyOptions + `
	}
}`)
	target := fmt.Sprintf("allowed.test:%d", e.echo.port())
	open := func(who string) int {
		resp, conn, _ := rawExchange(t, e.plain, "CONNECT "+target+" HTTP/1.1\r\nHost: x\r\nProxy-Authorization: "+basic(who, password)+"\r\n\r\n")
		if resp.StatusCode != 200 {
			conn.Close()
		}
		return resp.StatusCode
	}
	if got := open("alice"); got != 200 {
		t.Fatalf("alice's first tunnel: %d", got)
	}
	if got := open("alice"); got != http.StatusTooManyRequests {
		t.Fatalf("alice's second tunnel: %d, want 429", got)
	}
	if got := open("bob"); got != 200 {
		t.Fatalf("bob's tunnel: %d", got)
	}
	if n := waitAccepts(e.echo, 2); n != 2 {
		t.Errorf("origin saw %d connections, want 2", n)
	}
	status, body := c.AdminRequest(http.MethodGet, "/stick-tables/per_user/alice", nil)
	var entry struct {
		Values map[string]uint64 `json:"values"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &entry) != nil {
		t.Fatalf("alice's entry: %d %s", status, body)
	}
	if entry.Values["req_cur"] != 1 || entry.Values["http_req_cnt"] != 2 {
		t.Errorf("alice's entry %v, want req_cur 1 (the open tunnel) and http_req_cnt 2", entry.Values)
	}
}

// TestHTTP2OriginCloses downloads from an origin that sends 4 MiB and
// closes: the HTTP/2 stream must end cleanly after the last byte (not be
// reset), as the HTTP/1.1 tunnel does.
func TestHTTP2OriginCloses(t *testing.T) {
	e := newEnv(t)
	source := listen(t, allowedIP)
	go serveSource(source, 4<<20)
	e.vars["PORTS"] += fmt.Sprintf(" %d", source.port())
	e.start(baseConfig)
	cc := h2Dial(t, e.secure, e.proxyPool())
	resp, stream := h2Open(t, cc, fmt.Sprintf("%s:%d", allowedIP, source.port()), nil)
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	n, err := io.Copy(io.Discard, stream)
	if err != nil || n != 4<<20 {
		t.Fatalf("read %d of %d bytes: %v", n, 4<<20, err)
	}
}
