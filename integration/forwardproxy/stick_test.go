package forwardproxy_test

import (
	"bytes"
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

// serveExchange reads each connection until the client half-closes it,
// then writes down bytes and closes: a tunnel through it moves exactly
// what the client sent up and down bytes back.
func serveExchange(l net.Listener, down int64) {
	harness.ServeEach(l, func(c net.Conn) {
		if _, err := io.Copy(io.Discard, c); err != nil {
			return
		}
		_, _ = io.CopyN(c, zeros{}, down)
	})
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// byteQuotaConfig keys a stick table on the proxy user inside limits:
// at most two open tunnels per user, and no new request once the user
// received more than 1 MB.
const byteQuotaConfig = `{` + globalOptions + `
	stick_table per_user {
		type string
		size 1k
		expire 1m
		store http_req_cnt req_cur bytes_in_cnt bytes_out_cnt
	}
}
(limits) {
	limits {
		track per_user {http.auth.user.id}
		@busy stick per_user req_cur gt 2
		@quota stick per_user bytes_out_cnt gt 1000000
		tarpit @busy 0s 429
		tarpit @quota 0s 429
	}
}
:${PLAIN} {
	forward_proxy {
		basic_auth {
			alice ${HASH}
			bob ${HASH}
			carol ${HASH}
		}
		import limits` + proxyOptions + `
	}
}
:${SECURE} {
	tls ${CERT} ${KEY}
	forward_proxy {
		basic_auth {
			alice ${HASH}
			bob ${HASH}
			carol ${HASH}
		}
		import limits` + proxyOptions + `
	}
}
`

// userEntry reads the stick table values of a proxy user.
func userEntry(t *testing.T, c *harness.Caddy, who string) map[string]uint64 {
	t.Helper()
	status, body := c.AdminRequest(http.MethodGet, "/stick-tables/per_user/"+who, nil)
	if status != http.StatusOK {
		t.Fatalf("entry of %s: %d %s", who, status, body)
	}
	var e struct {
		Values map[string]uint64 `json:"values"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatal(err)
	}
	return e.Values
}

// waitEntry polls a user's entry until ok holds for it (5 s at most).
func waitEntry(t *testing.T, c *harness.Caddy, who, what string, ok func(map[string]uint64) bool) map[string]uint64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v := userEntry(t, c, who)
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's entry %v: want %s", who, v, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// connectAs opens an HTTP/1.1 CONNECT tunnel through the plain proxy as
// who, and returns the status, the connection and its reader.
func (e *env) connectAs(who, target string) (int, *net.TCPConn, io.Reader) {
	e.t.Helper()
	resp, conn, br := rawExchange(e.t, e.plain, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\nProxy-Authorization: "+basic(who, password)+"\r\n\r\n")
	if resp.StatusCode != http.StatusOK {
		readBody(e.t, resp)
		conn.Close()
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	return resp.StatusCode, conn.(*net.TCPConn), br
}

// TestStickTunnelBytes sends a known number of bytes up and down an
// HTTP/1.1 CONNECT tunnel, an HTTP/2 CONNECT stream and an absolute-form
// request, each as its own user, and checks that the user's bytes_in_cnt
// and bytes_out_cnt are exactly those bytes (the payload, not the CONNECT
// exchange), and that req_cur falls back to 0.
func TestStickTunnelBytes(t *testing.T) {
	e := newEnv(t)
	const up, down = 300_001, 700_003
	ex := listen(t, allowedIP)
	go serveExchange(ex, down)
	e.vars["PORTS"] += fmt.Sprintf(" %d", ex.port())
	page := strings.Repeat("p", 12345)
	body := strings.Repeat("q", 5432)
	pageOrigin := listen(t, allowedIP)
	serveHTTP(t, pageOrigin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, page)
	}), nil)
	e.vars["HTTPPORT"] = fmt.Sprint(pageOrigin.port())
	c := e.start(byteQuotaConfig)
	target := fmt.Sprintf("%s:%d", allowedIP, ex.port())

	// HTTP/1.1: the connection is the tunnel
	status, conn, r := e.connectAs("alice", target)
	if status != http.StatusOK {
		t.Fatalf("alice's tunnel: %d", status)
	}
	if _, err := io.CopyN(conn, zeros{}, up); err != nil {
		t.Fatal(err)
	}
	_ = conn.CloseWrite()
	if n, err := io.Copy(io.Discard, r); err != nil || n != down {
		t.Fatalf("HTTP/1.1 tunnel: read %d of %d bytes: %v", n, down, err)
	}
	conn.Close()
	v := waitEntry(t, c, "alice", "req_cur 0", func(v map[string]uint64) bool { return v["req_cur"] == 0 })
	if v["bytes_in_cnt"] != up || v["bytes_out_cnt"] != down {
		t.Errorf("HTTP/1.1 tunnel: alice's entry counts bytes_in_cnt %d, bytes_out_cnt %d; the tunnel moved %d up, %d down", v["bytes_in_cnt"], v["bytes_out_cnt"], up, down)
	}

	// HTTP/2: the stream is the tunnel
	cc := h2Dial(t, e.secure, e.proxyPool())
	resp, stream := h2Open(t, cc, target, http.Header{"Proxy-Authorization": {basic("bob", password)}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("bob's HTTP/2 tunnel: %s", resp.Status)
	}
	if _, err := io.CopyN(stream.w, zeros{}, up); err != nil {
		t.Fatal(err)
	}
	stream.w.Close()
	if n, err := io.Copy(io.Discard, stream.r); err != nil || n != down {
		t.Fatalf("HTTP/2 tunnel: read %d of %d bytes: %v", n, down, err)
	}
	stream.Close()
	v = waitEntry(t, c, "bob", "req_cur 0", func(v map[string]uint64) bool { return v["req_cur"] == 0 })
	if v["bytes_in_cnt"] != up || v["bytes_out_cnt"] != down {
		t.Errorf("HTTP/2 tunnel: bob's entry counts bytes_in_cnt %d, bytes_out_cnt %d; the stream moved %d up, %d down", v["bytes_in_cnt"], v["bytes_out_cnt"], up, down)
	}

	// absolute-form: the request and response bodies
	resp, _, _ = rawExchange(t, e.plain, fmt.Sprintf("POST http://%s:%d/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\nContent-Length: %d\r\n\r\n%s", allowedIP, pageOrigin.port(), basic("carol", password), len(body), body))
	if got := readBody(t, resp); resp.StatusCode != http.StatusOK || got != page {
		t.Fatalf("absolute-form: %s, %d bytes", resp.Status, len(got))
	}
	v = waitEntry(t, c, "carol", "req_cur 0", func(v map[string]uint64) bool { return v["req_cur"] == 0 })
	if v["bytes_in_cnt"] != uint64(len(body)) || v["bytes_out_cnt"] != uint64(len(page)) {
		t.Errorf("absolute-form: carol's entry counts bytes_in_cnt %d, bytes_out_cnt %d; the request carried %d up, %d down", v["bytes_in_cnt"], v["bytes_out_cnt"], len(body), len(page))
	}
}

// TestStickTunnelBytesWhileOpen checks that an HTTP/1.1 tunnel's bytes
// reach the table while it is open (a long tunnel counts before it ends),
// and that the byte quota then refuses the user's next tunnel with 429
// before any connection.
func TestStickTunnelBytesWhileOpen(t *testing.T) {
	e := newEnv(t)
	c := e.start(byteQuotaConfig)
	target := fmt.Sprintf("allowed.test:%d", e.echo.port())
	status, conn, r := e.connectAs("alice", target)
	if status != http.StatusOK {
		t.Fatalf("alice's tunnel: %d", status)
	}
	const n = 3 << 20
	go func() { _, _ = io.CopyN(conn, zeros{}, n) }()
	if _, err := io.CopyN(io.Discard, r, n); err != nil {
		t.Fatalf("echo through the tunnel: %v", err)
	}
	waitEntry(t, c, "alice", fmt.Sprintf("bytes_in_cnt and bytes_out_cnt %d while the tunnel is open", n), func(v map[string]uint64) bool {
		return v["req_cur"] == 1 && v["bytes_in_cnt"] == n && v["bytes_out_cnt"] == n
	})
	accepts := e.echo.accepts.Load()
	if status, _, _ := e.connectAs("alice", target); status != http.StatusTooManyRequests {
		t.Errorf("alice's tunnel past her byte quota: %d, want 429", status)
	}
	if status, second, _ := e.connectAs("bob", target); status != http.StatusOK {
		t.Errorf("bob's tunnel: %d (alice's quota is hers)", status)
	} else {
		second.Close()
	}
	if got := waitAccepts(e.echo, accepts+1); got != accepts+1 {
		t.Errorf("the origin saw %d new connections, want 1 (bob's)", got-accepts)
	}
	// the refusal is logged for the operator, as the policy's are
	logged, data := e.firstRefusal()
	if logged == nil || logged["user"] != "alice" || logged["decision"] != "limits" || logged["destination_host"] != "allowed.test" {
		t.Errorf("refusal log %v\n%s", logged, data)
	}
	conn.Close()
	waitEntry(t, c, "alice", "req_cur 0 and the bytes kept", func(v map[string]uint64) bool {
		return v["req_cur"] == 0 && v["bytes_in_cnt"] == n && v["bytes_out_cnt"] == n
	})
}

// TestStickTunnelReleasedOnAbort holds a user's two allowed tunnels, sees
// the third refused, then ends the open ones the ways a client can (reset
// mid-transfer, plain close) and a CONNECT whose destination does not
// answer: every way out gives the tunnel back (req_cur), and new tunnels
// are allowed again.
func TestStickTunnelReleasedOnAbort(t *testing.T) {
	e := newEnv(t)
	dead := listen(t, allowedIP)
	deadPort := dead.port()
	dead.Close() // nothing listens there any more
	e.vars["PORTS"] += fmt.Sprintf(" %d", deadPort)
	c := e.start(byteQuotaConfig)
	target := fmt.Sprintf("allowed.test:%d", e.echo.port())
	s1, t1, _ := e.connectAs("alice", target)
	s2, t2, _ := e.connectAs("alice", target)
	if s1 != 200 || s2 != 200 {
		t.Fatalf("alice's first two tunnels: %d %d", s1, s2)
	}
	if s3, _, _ := e.connectAs("alice", target); s3 != http.StatusTooManyRequests {
		t.Fatalf("alice's third tunnel: %d, want 429", s3)
	}
	waitEntry(t, c, "alice", "req_cur 2", func(v map[string]uint64) bool { return v["req_cur"] == 2 })

	// reset in the middle of a transfer
	if _, err := t1.Write(bytes.Repeat([]byte("x"), 64<<10)); err != nil {
		t.Fatal(err)
	}
	_ = t1.SetLinger(0)
	t1.Close()
	waitEntry(t, c, "alice", "req_cur 1 after a reset", func(v map[string]uint64) bool { return v["req_cur"] == 1 })
	t2.Close()
	waitEntry(t, c, "alice", "req_cur 0 after a close", func(v map[string]uint64) bool { return v["req_cur"] == 0 })

	// a destination that refuses the connection: 502, and released
	resp, _, _ := rawExchange(t, e.plain, fmt.Sprintf("CONNECT %s:%d HTTP/1.1\r\nHost: x\r\nProxy-Authorization: %s\r\n\r\n", allowedIP, deadPort, basic("alice", password)))
	if body := readBody(t, resp); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("CONNECT to a closed port: %s %q", resp.Status, body)
	}
	waitEntry(t, c, "alice", "req_cur 0 after a 502", func(v map[string]uint64) bool { return v["req_cur"] == 0 })
	for i := range 2 {
		if s, conn, _ := e.connectAs("alice", target); s != http.StatusOK {
			t.Fatalf("alice's tunnel %d after the others ended: %d", i, s)
		} else {
			defer conn.Close()
		}
	}
}

// TestConnectWithEarlyData sends the CONNECT request and the first tunnel
// bytes in one write (a client that does not wait for the 200, as with an
// optimistic TLS ClientHello): the bytes the server had already buffered
// reach the destination first, the rest follows, and the stick table
// counts both.
func TestConnectWithEarlyData(t *testing.T) {
	e := newEnv(t)
	c := e.start(byteQuotaConfig)
	target := fmt.Sprintf("allowed.test:%d", e.echo.port())
	early := strings.Repeat("e", 1000)
	resp, conn, br := rawExchange(t, e.plain, "CONNECT "+target+" HTTP/1.1\r\nHost: x\r\nProxy-Authorization: "+basic("alice", password)+"\r\n\r\n"+early)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %s", resp.Status)
	}
	late := strings.Repeat("l", 2000)
	if _, err := io.WriteString(conn, late); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(early)+len(late))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != early+late {
		t.Fatalf("echo through the tunnel: %v (%d bytes, in order: %v)", err, len(got), string(got) == early+late)
	}
	conn.Close()
	v := waitEntry(t, c, "alice", "req_cur 0", func(v map[string]uint64) bool { return v["req_cur"] == 0 })
	if n := uint64(len(early) + len(late)); v["bytes_in_cnt"] != n || v["bytes_out_cnt"] != n {
		t.Errorf("alice's entry %v, want %d bytes each way", v, n)
	}
}
