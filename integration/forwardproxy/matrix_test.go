package forwardproxy_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestOpenRelayMatrix sends every request an open relay would serve and
// checks that each is refused with the expected status and rule, and that
// no listener behind the proxy was offered a connection: the allowed
// origins count their accepts, the traps on 127.0.0.1, [::1] and an
// unlisted port fail the test if anything reaches them.
func TestOpenRelayMatrix(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig)
	echo := e.echo.port()
	httpPort := e.httpOrig.port()
	auth := "Proxy-Authorization: " + basic(user, password) + "\r\n"
	connect := func(target, extra string) string {
		return "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n" + extra + "\r\n"
	}
	origins := func() int64 { return e.echo.accepts.Load() + e.httpOrig.accepts.Load() + e.tlsOrig.accepts.Load() }
	t.Cleanup(func() {
		time.Sleep(200 * time.Millisecond) // an accept loop running late
		if n := origins(); n != 0 {
			t.Errorf("%d connections reached the allowed origins during the matrix", n)
		}
	})
	for _, tc := range []struct {
		name    string
		proxy   string
		request string
		status  int
		rule    string
	}{
		{"no credentials", e.plain, connect(fmt.Sprintf("allowed.test:%d", echo), ""), 407, "basic_auth"},
		{"wrong password", e.plain, connect(fmt.Sprintf("allowed.test:%d", echo), "Proxy-Authorization: "+basic(user, "guess")+"\r\n"), 407, "basic_auth"},
		{"unknown user", e.plain, connect(fmt.Sprintf("allowed.test:%d", echo), "Proxy-Authorization: "+basic("mallory", password)+"\r\n"), 407, "basic_auth"},
		{"credentials in Authorization", e.plain, connect(fmt.Sprintf("allowed.test:%d", echo), "Authorization: "+basic(user, password)+"\r\n"), 407, "basic_auth"},
		{"Connection names Proxy-Authorization", e.plain, connect(fmt.Sprintf("allowed.test:%d", echo), "Connection: Proxy-Authorization\r\nProxy-Authorization: "+basic(user, "guess")+"\r\n"), 407, "basic_auth"},
		{"disallowed source", e.sources, connect(fmt.Sprintf("allowed.test:%d", echo), ""), 403, "allow_source"},
		{"disallowed source with credentials", e.sources, connect(fmt.Sprintf("allowed.test:%d", echo), auth), 403, "allow_source"},
		{"port 25", e.plain, connect(allowedIP+":25", auth), 403, "connect_ports"},
		{"unlisted port", e.plain, connect(fmt.Sprintf("%s:%d", allowedIP, e.trapPort.port()), auth), 403, "connect_ports"},
		{"no port", e.plain, connect("allowed.test", auth), 400, "invalid_destination"},
		{"127.0.0.1", e.plain, connect(fmt.Sprintf("127.0.0.1:%d", echo), auth), 403, "private_destinations"},
		{"localhost", e.plain, connect(fmt.Sprintf("localhost:%d", echo), auth), 403, "private_destinations"},
		{"LOCALHOST.", e.plain, connect(fmt.Sprintf("LOCALHOST.:%d", echo), auth), 403, "private_destinations"},
		{"decimal 2130706433", e.plain, connect(fmt.Sprintf("2130706433:%d", echo), auth), 403, "private_destinations"},
		{"octal 0177.0.0.1", e.plain, connect(fmt.Sprintf("0177.0.0.1:%d", echo), auth), 403, "private_destinations"},
		{"hex 0x7f.1", e.plain, connect(fmt.Sprintf("0x7f.1:%d", echo), auth), 403, "private_destinations"},
		{"[::ffff:127.0.0.1]", e.plain, connect(fmt.Sprintf("[::ffff:127.0.0.1]:%d", echo), auth), 403, "private_destinations"},
		{"[::1]", e.plain, connect(fmt.Sprintf("[::1]:%d", echo), auth), 403, "private_destinations"},
		{"[0:0:0:0:0:0:0:1]", e.plain, connect(fmt.Sprintf("[0:0:0:0:0:0:0:1]:%d", echo), auth), 403, "private_destinations"},
		{"name resolving to 127.0.0.1", e.plain, connect(fmt.Sprintf("trap.test:%d", echo), auth), 403, "private_destinations"},
		{"name resolving to 10.x", e.plain, connect(fmt.Sprintf("ten.test:%d", echo), auth), 403, "private_destinations"},
		{"name resolving to an allowed and a 10.x address", e.plain, connect(fmt.Sprintf("mixed.test:%d", echo), auth), 403, "private_destinations"},
		{"name resolving to ::1 (AAAA)", e.plain, connect(fmt.Sprintf("six.test:%d", echo), auth), 403, "private_destinations"},
		{"169.254.169.254", e.plain, connect(fmt.Sprintf("169.254.169.254:%d", echo), auth), 403, "private_destinations"},
		{"name resolving to 169.254.169.254", e.plain, connect(fmt.Sprintf("meta.test:%d", echo), auth), 403, "private_destinations"},
		{"[fd00:ec2::254]", e.plain, connect(fmt.Sprintf("[fd00:ec2::254]:%d", echo), auth), 403, "private_destinations"},
		{"block list name", e.plain, connect(fmt.Sprintf("blocked.test:%d", echo), auth), 403, "block_list"},
		{"block list wildcard", e.plain, connect(fmt.Sprintf("a.blocked-wild.test:%d", echo), auth), 403, "block_list"},
		{"public address not allowed", e.plain, connect(fmt.Sprintf("93.184.215.14:%d", echo), auth), 403, "allow_destination"},
		{"unresolvable name", e.plain, connect(fmt.Sprintf("nx.test:%d", echo), auth), 502, "unresolved"},
		{"bad IP literal", e.plain, connect(fmt.Sprintf("1.2.3.999:%d", echo), auth), 400, "invalid_destination"},
		{"CONNECT with a body", e.plain, "CONNECT " + fmt.Sprintf("allowed.test:%d", echo) + " HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 41\r\n\r\nGET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed_request"},
		{"CONNECT with a chunked body", e.plain, "CONNECT " + fmt.Sprintf("allowed.test:%d", echo) + " HTTP/1.1\r\nHost: x\r\n" + auth + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, "malformed_request"},
		{"absolute-form to 127.0.0.1 with an allowed Host", e.plain, fmt.Sprintf("GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: allowed.test:%d\r\n%s\r\n", httpPort, httpPort, auth), 403, "private_destinations"},
		{"absolute-form to localhost", e.plain, fmt.Sprintf("GET http://localhost:%d/ HTTP/1.1\r\nHost: x\r\n%s\r\n", httpPort, auth), 403, "private_destinations"},
		{"absolute-form to a decimal IP", e.plain, fmt.Sprintf("GET http://2130706433:%d/ HTTP/1.1\r\nHost: x\r\n%s\r\n", httpPort, auth), 403, "private_destinations"},
		{"absolute-form to port 25", e.plain, fmt.Sprintf("GET http://%s:25/ HTTP/1.1\r\nHost: x\r\n%s\r\n", allowedIP, auth), 403, "http_ports"},
		{"absolute-form without credentials", e.plain, fmt.Sprintf("GET http://allowed.test:%d/ HTTP/1.1\r\nHost: x\r\n\r\n", httpPort), 407, "basic_auth"},
		{"absolute-form ftp", e.plain, fmt.Sprintf("GET ftp://allowed.test:%d/ HTTP/1.1\r\nHost: x\r\n%s\r\n", httpPort, auth), 400, "malformed_request"},
		{"absolute-form with Proxy-Connection keep-alive to 127.0.0.1", e.plain, fmt.Sprintf("GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\nProxy-Connection: keep-alive\r\n%s\r\n", httpPort, auth), 403, "private_destinations"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := origins()
			resp, _, _ := rawExchange(t, tc.proxy, tc.request)
			body := readBody(t, resp)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d (%q)", resp.StatusCode, tc.status, body)
			}
			want := "forward_proxy: refused by " + tc.rule + "\n"
			if tc.status == 407 {
				want = "forward_proxy: proxy authentication required (basic_auth)\n"
			}
			if body != want || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
				t.Errorf("refusal %q (%s), want exactly %q as text/plain", body, resp.Header.Get("Content-Type"), want)
			}
			if tc.status == 407 && !strings.HasPrefix(resp.Header.Get("Proxy-Authenticate"), `Basic realm="proxy"`) {
				t.Errorf("407 without Proxy-Authenticate: %v", resp.Header)
			}
			for _, leak := range []string{"127.0.0", "10.0.0", "169.254", "::1", "dial", "lookup"} {
				if tc.status != 400 && strings.Contains(body, leak) {
					t.Errorf("the refusal tells the client %q: %q", leak, body)
				}
			}
			if !resp.Close {
				t.Error("a refused request leaves the connection open")
			}
			if after := origins(); after != before {
				t.Errorf("%d connections reached the allowed origins", after-before)
			}
		})
	}
}

// TestPipelinedAfterRefusal checks that a request pipelined behind a
// refused one (a Proxy-Connection: keep-alive smuggling attempt) is never
// read: the proxy closes the connection after the refusal.
func TestPipelinedAfterRefusal(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig)
	auth := "Proxy-Authorization: " + basic(user, password) + "\r\n"
	second := fmt.Sprintf("CONNECT allowed.test:%d HTTP/1.1\r\nHost: x\r\n%s\r\n", e.echo.port(), auth)
	resp, conn, br := rawExchange(t, e.plain, fmt.Sprintf("CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\nProxy-Connection: keep-alive\r\n%s\r\n", e.echo.port(), auth)+second)
	readBody(t, resp)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("first: %s", resp.Status)
	}
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	rest, _ := io.ReadAll(br)
	if len(rest) != 0 {
		t.Errorf("the pipelined request was answered: %q", rest)
	}
	if n := e.echo.accepts.Load(); n != 0 {
		t.Errorf("the pipelined CONNECT reached the origin (%d accepts)", n)
	}
}

// TestRebinding points a name at an allowed address, then at loopback: the
// second tunnel is refused without a connection, and the first stays with
// the address that was checked.
func TestRebinding(t *testing.T) {
	e := newEnv(t)
	e.start(baseConfig)
	e.dns.AddDNSARecord("rebind.test", []string{allowedIP})
	target := fmt.Sprintf("rebind.test:%d", e.echo.port())
	first := e.connect(target)
	e.dns.DeleteDNSARecord("rebind.test")
	e.dns.AddDNSARecord("rebind.test", []string{"127.0.0.1"})
	resp, _, _ := rawExchange(t, e.plain, "CONNECT "+target+" HTTP/1.1\r\nHost: x\r\nProxy-Authorization: "+basic(user, password)+"\r\n\r\n")
	if body := readBody(t, resp); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "private_destinations") {
		t.Fatalf("after rebinding: %s %q", resp.Status, body)
	}
	if _, err := io.WriteString(first, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	_ = first.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(first, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("first tunnel: %q %v", buf, err)
	}
	if n := waitAccepts(e.echo, 1); n != 1 {
		t.Errorf("echo origin accepted %d connections, want 1", n)
	}
}
