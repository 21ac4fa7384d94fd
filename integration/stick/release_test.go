package stick_test

import (
	"bufio"
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

// releaseCaddyfile tracks every request under its X-Key header in a
// 1000-entry string table, with Caddy's own reverse_proxy behind track.
func releaseCaddyfile(port int, origin string) string {
	return fmt.Sprintf(`{
	auto_https off
	stick_table per_key {
		type string len 32
		size 1000
		expire 10m
		store req_cur http_req_cnt gpc0
	}
	stick_table per_ip {
		type ip
		size 1000
		expire 10m
		store conn_cur conn_cnt
	}
	servers :%d {
		listener_wrappers {
			stick per_ip
		}
	}
}

:%d {
	track per_key {header.X-Key}
	@busy stick per_key req_cur gt 1
	respond @busy 429
	reverse_proxy %s {
		flush_interval -1
		transport http {
			response_header_timeout 300ms
		}
	}
}
`, port, port, origin)
}

// badOrigin answers /close-mid-body with a Content-Length it never
// fulfils (it hangs up after part of the body), /slow with a body that
// trickles out until the client leaves, and /ws with a WebSocket-style
// upgrade that echoes until the client closes.
func badOrigin(t *testing.T) string {
	t.Helper()
	return startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/close-mid-body":
			w.Header().Set("Content-Length", "100000")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte(strings.Repeat("a", 1000)))
			w.(http.Flusher).Flush()
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		case "/slow":
			w.Header().Set("Content-Type", "text/plain")
			for i := 0; i < 200; i++ {
				if _, err := w.Write([]byte(strings.Repeat("b", 4096))); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		case "/hang":
			select {
			case <-r.Context().Done():
			case <-time.After(3 * time.Second):
			}
		case "/ws":
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			_ = brw.Flush()
			_, _ = io.Copy(conn, brw)
		default:
			_, _ = io.WriteString(w, "ok")
		}
	})
}

// rawRequest sends a GET with an X-Key header on a fresh connection and
// returns the connection with its reader, positioned after the headers.
func rawRequest(t *testing.T, addr, path, key string, extra string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Key: %s\r\n%s\r\n", path, key, extra)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		t.Fatalf("GET %s: %v", path, err)
	}
	return conn, br, resp
}

// waitUse waits until the entry of key is held by nobody and its req_cur
// is 0, and the listener wrapper's entry for 127.0.0.1 counts no open
// connection, failing after a few seconds.
func waitUse(t *testing.T, c *harness.Caddy, key string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		e, ok := adminEntry(t, c, "per_key", key)
		if !ok {
			t.Fatalf("no entry for %s", key)
		}
		conns, _ := adminEntry(t, c, "per_ip", "127.0.0.1")
		if e.Use == 0 && e.Values["req_cur"] == 0 && conns.Values["conn_cur"] == 0 && conns.Use == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still held after the request ended: entry %s use %d req_cur %d; connection entry use %d conn_cur %d",
				key, e.Use, e.Values["req_cur"], conns.Use, conns.Values["conn_cur"])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTrackReleasesOnEveryExit ends tracked requests badly, with Caddy's
// reverse_proxy behind track: an origin that closes mid-body (Caddy
// aborts the response with http.ErrAbortHandler), a client that leaves
// mid-download, and an upgraded connection. Every entry is released.
func TestTrackReleasesOnEveryExit(t *testing.T) {
	port := harness.FreePort(t)
	c := harness.RunCaddyfile(t, releaseCaddyfile(port, badOrigin(t)))
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	t.Run("origin closes mid-body", func(t *testing.T) {
		conn, br, resp := rawRequest(t, addr, "/close-mid-body", "origin-closes", "")
		defer conn.Close()
		if n, err := io.Copy(io.Discard, io.LimitReader(br, resp.ContentLength)); err == nil && n == resp.ContentLength {
			t.Fatalf("got the whole body (%d bytes) from an origin that hung up", n)
		}
		waitUse(t, c, "origin-closes")
	})
	t.Run("client leaves mid-download", func(t *testing.T) {
		conn, br, _ := rawRequest(t, addr, "/slow", "client-leaves", "")
		if _, err := io.ReadFull(br, make([]byte, 8192)); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		waitUse(t, c, "client-leaves")
	})
	t.Run("origin times out", func(t *testing.T) {
		conn, _, resp := rawRequest(t, addr, "/hang", "timed-out", "")
		conn.Close()
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Errorf("hanging origin answered %d, want 504", resp.StatusCode)
		}
		waitUse(t, c, "timed-out")
	})
	t.Run("upgrade", func(t *testing.T) {
		conn, br, resp := rawRequest(t, addr, "/ws", "upgraded", "Connection: Upgrade\r\nUpgrade: websocket\r\n")
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade answered %d", resp.StatusCode)
		}
		fmt.Fprint(conn, "ping")
		got := make([]byte, 4)
		if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
			t.Fatalf("tunnel echo %q %v", got, err)
		}
		// While the tunnel is open the request is in progress.
		if e, _ := adminEntry(t, c, "per_key", "upgraded"); e.Values["req_cur"] != 1 {
			t.Errorf("req_cur %d while the upgraded connection is open, want 1", e.Values["req_cur"])
		}
		conn.Close()
		waitUse(t, c, "upgraded")
	})
}

// TestAbortedRequestsLeaveTableUsable sends 1,100 requests with distinct
// keys into a 1,000-entry table, each aborted by an origin that closes
// mid-body: the table must still track new keys and accept admin PUTs
// afterwards, because no entry stays held.
func TestAbortedRequestsLeaveTableUsable(t *testing.T) {
	port := harness.FreePort(t)
	c := harness.RunCaddyfile(t, releaseCaddyfile(port, badOrigin(t)))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	for i := range 1100 {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/close-mid-body", nil)
		req.Header.Set("X-Key", fmt.Sprintf("abort-%04d", i))
		resp, err := hc.Do(req)
		if err != nil {
			continue // the abort may surface as a transport error
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// Held entries would refuse new keys: a new key is tracked ...
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	req.Header.Set("X-Key", "fresh-key")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("new key answered %d", resp.StatusCode)
	}
	if e, ok := adminEntry(t, c, "per_key", "fresh-key"); !ok || e.Values["http_req_cnt"] != 1 {
		t.Fatalf("new key not tracked after the aborted requests: %+v %v", e, ok)
	}
	// ... and the admin API can create entries.
	adminJSON(t, c, http.MethodPut, "/stick-tables/per_key/admin-key", `{"gpc0": 1}`, 200)
	var es []entry
	if err := json.Unmarshal([]byte(adminJSON(t, c, http.MethodGet, "/stick-tables/per_key?filter=req_cur>0", "", 200)), &es); err != nil {
		t.Fatal(err)
	}
	if len(es) != 0 {
		t.Errorf("%d entries still count a request in progress, e.g. %+v", len(es), es[0])
	}
}

// TestStickinessReleasesOnAbort: lb_policy stick without a track holds the
// client's entry only while it chooses; an aborted response leaves it
// unheld.
func TestStickinessReleasesOnAbort(t *testing.T) {
	port := harness.FreePort(t)
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	auto_https off
	stick_table sessions {
		type ip
		size 100
		store server_id
	}
}

:%d {
	reverse_proxy %s {
		lb_policy stick sessions
	}
}
`, port, badOrigin(t)))
	conn, br, resp := rawRequest(t, fmt.Sprintf("127.0.0.1:%d", port), "/close-mid-body", "", "")
	_, _ = io.Copy(io.Discard, io.LimitReader(br, resp.ContentLength))
	conn.Close()
	e, ok := adminEntry(t, c, "sessions", "127.0.0.1")
	if !ok || e.Values["server_id"] == 0 || e.Use != 0 {
		t.Errorf("after an aborted response: %+v %v; want server_id set and no holder", e, ok)
	}
}
