// Package stick_test runs stick tables end to end in an in-process Caddy:
// HTTP limits, tarpit, admin API, listener and layer4 tracking, reloads and
// stickiness, all on 127.0.0.1.
package stick_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/rampart-edge/caddy-rampart"
	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// client is a keep-alive HTTP client for the tests.
func client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
}

// get sends a GET and returns the status and body.
func get(t *testing.T, c *http.Client, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// entry is an admin API entry.
type entry struct {
	Key         string            `json:"key"`
	ExpiresIn   string            `json:"expires_in"`
	ExpiresInMs int64             `json:"expires_in_ms"`
	Use         int               `json:"use"`
	Values      map[string]uint64 `json:"values"`
}

// adminEntry reads one entry through the admin API; ok is false on 404.
func adminEntry(t *testing.T, c *harness.Caddy, tableName, key string) (entry, bool) {
	t.Helper()
	status, body := c.AdminRequest(http.MethodGet, "/stick-tables/"+tableName+"/"+key, nil)
	if status == http.StatusNotFound {
		return entry{}, false
	}
	if status != http.StatusOK {
		t.Fatalf("GET entry %s/%s: %d %s", tableName, key, status, body)
	}
	var e entry
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("entry JSON: %v\n%s", err, body)
	}
	return e, true
}

// adminJSON sends an admin request and checks the status.
func adminJSON(t *testing.T, c *harness.Caddy, method, path, body string, wantStatus int) string {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	status, out := c.AdminRequest(method, path, r)
	if status != wantStatus {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, wantStatus, out)
	}
	return out
}

// startEchoOrigin runs a TCP echo server on 127.0.0.1 until the test ends.
func startEchoOrigin(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go harness.ServeEach(ln, func(c net.Conn) { _, _ = io.Copy(c, c) })
	return ln.Addr().String()
}

// startHTTPOrigin runs an HTTP origin that answers with its name.
func startHTTPOrigin(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, name)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// connClosedWithoutData reports whether a fresh TCP connection to addr is
// closed by the server before it sends anything and without the client
// sending anything.
func connClosedWithoutData(t *testing.T, addr string) bool {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return true // refused outright
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 1)
	n, err := conn.Read(buf)
	if n > 0 {
		t.Fatalf("server sent data %q on a connection that should be rejected", buf[:n])
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false // still open: nobody rejected it
	}
	return err != nil
}

// metric returns the value of one sample line of the admin /metrics output
// (0 when absent). Counters are process-wide, so tests compare deltas.
func metric(t *testing.T, c *harness.Caddy, series string) float64 {
	t.Helper()
	_, body := c.AdminRequest(http.MethodGet, "/metrics", nil)
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err != nil {
				t.Fatalf("metric %s: %q", series, line)
			}
			return v
		}
	}
	return 0
}
