// Package quickstart_test runs examples/quickstart/Caddyfile as it is and
// checks what the README's walkthrough says a user will see.
package quickstart_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// quickstartPorts are the fixed ports the quickstart listens on.
var quickstartPorts = []int{8080, 8443, 8081, 9080, 9443}

func startQuickstart(t *testing.T) *harness.Caddy {
	t.Helper()
	for _, port := range quickstartPorts {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Skipf("port %d is taken; the quickstart needs it free: %v", port, err)
		}
		ln.Close()
	}
	data, err := os.ReadFile(filepath.Join(harness.RepoRoot(t), "examples", "quickstart", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	c := harness.RunCaddyfile(t, string(data))
	for _, port := range quickstartPorts {
		harness.WaitListening(t, fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	}
	return c
}

// client talks to the quickstart like curl -k, without following redirects.
var client = &http.Client{
	Timeout:       10 * time.Second,
	Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// get fetches url, waiting up to 10s for the internal CA to issue the
// site's certificate.
func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	var resp *http.Response
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err = client.Get(url); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestQuickstartProxyProtocol(t *testing.T) {
	startQuickstart(t)
	curl := harness.Peer(t, "curl", "curl")
	out, err := exec.Command(curl, "-s", "--haproxy-protocol", "http://localhost:8081/").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "client 127.0.0.1 (PROXY v1, from 127.0.0.1:") {
		t.Errorf("curl --haproxy-protocol: %v %q", err, out)
	}
	cmd := exec.Command(curl, "-s", "http://localhost:8081/")
	err = cmd.Run()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != 52 {
		t.Errorf("curl without a header: %v, want exit 52 (empty reply)", err)
	}
}

func TestQuickstartServesTheOrigin(t *testing.T) {
	startQuickstart(t)
	for _, url := range []string{"http://localhost:8080/", "https://localhost:8443/"} {
		resp, body := get(t, url)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Demo origin") {
			t.Errorf("%s: %d %q", url, resp.StatusCode, body)
		}
	}
}

// TestQuickstartHidesTheOrigin checks the origin hiding walkthrough: no
// origin header, redirect or link reaches the client, and the origin
// refuses requests that did not come through the edge.
func TestQuickstartHidesTheOrigin(t *testing.T) {
	startQuickstart(t)
	for _, site := range []string{"http://localhost:8080", "https://localhost:8443"} {
		resp, body := get(t, site+"/")
		for _, h := range []string{"Server", "X-Powered-By", "Via"} {
			if v := resp.Header.Get(h); v != "" && v != "Caddy" {
				t.Errorf("%s: %s: %s reached the client", site, h, v)
			}
		}
		if strings.Contains(body, "10.0.0.10") || !strings.Contains(body, `href="`+site+`/login"`) {
			t.Errorf("%s: body still names the origin or lacks the rewritten link: %q", site, body)
		}
		resp, _ = get(t, site+"/login")
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != site+"/login" {
			t.Errorf("%s/login: %d Location %q, want 302 to %s/login", site, resp.StatusCode, loc, site)
		}
	}
	if resp, _ := get(t, "http://127.0.0.1:9080/"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("direct request to the origin: %d, want 403", resp.StatusCode)
	}
}

// TestQuickstartPerIPLimit follows the stick table walkthrough: 20
// requests in 10s pass, the 21st gets 429, the table shows the client, and
// a ban set through the admin API refuses it until the entry is deleted.
func TestQuickstartPerIPLimit(t *testing.T) {
	c := startQuickstart(t)
	codes := burstInOnePeriod(t, c, 25)
	for i, code := range codes {
		want := http.StatusOK
		if i >= 20 {
			want = http.StatusTooManyRequests
		}
		if code != want {
			t.Fatalf("request %d: %d, want %d (all: %v)", i+1, code, want, codes)
		}
	}
	if resp, _ := get(t, "http://localhost:8080/"); resp.Header.Get("X-Rate-10s") != "26" {
		t.Errorf("X-Rate-10s = %q, want 26", resp.Header.Get("X-Rate-10s"))
	}
	status, body := c.AdminRequest(http.MethodGet, "/stick-tables/per_ip?sort=http_req_rate", nil)
	if status != http.StatusOK || !strings.Contains(body, `"key":"127.0.0.1"`) {
		t.Errorf("GET /stick-tables/per_ip: %d %s", status, body)
	}
	if status, body := c.AdminRequest(http.MethodPut, "/stick-tables/per_ip/127.0.0.1", strings.NewReader(`{"ban": "1m"}`)); status != http.StatusOK {
		t.Fatalf("PUT ban: %d %s", status, body)
	}
	if resp, body := get(t, "http://localhost:8080/"); resp.StatusCode != http.StatusForbidden || body != "banned\n" {
		t.Errorf("after the ban: %d %q", resp.StatusCode, body)
	}
	if status, body := c.AdminRequest(http.MethodDelete, "/stick-tables/per_ip/127.0.0.1", nil); status != http.StatusOK {
		t.Fatalf("DELETE: %d %s", status, body)
	}
	if resp, _ := get(t, "http://localhost:8080/"); resp.StatusCode != http.StatusOK {
		t.Errorf("after DELETE: %d", resp.StatusCode)
	}
}

// burstInOnePeriod sends n requests within one 10s rate period of the
// table clock (Unix time) and returns their statuses. Across a period
// boundary HAProxy's two-period estimate weighs the earlier requests down, so
// an exact limit can only be checked inside one period: a burst that crosses
// one (a slow, loaded machine) is repeated on a fresh entry.
func burstInOnePeriod(t *testing.T, c *harness.Caddy, n int) []int {
	t.Helper()
	const period = 10 * time.Second
	for range 3 {
		if status, body := c.AdminRequest(http.MethodDelete, "/stick-tables/per_ip/127.0.0.1", nil); status != http.StatusOK && status != http.StatusNotFound {
			t.Fatalf("DELETE: %d %s", status, body)
		}
		// Start a second into a period: the table's coarse clock may lag
		// the wall clock on a loaded machine, and a burst right at the
		// boundary would then begin in the table's previous period.
		switch into := time.Duration(time.Now().UnixMilli()%period.Milliseconds()) * time.Millisecond; {
		case into < time.Second:
			time.Sleep(time.Second - into)
		case into > period/2:
			time.Sleep(period - into + time.Second)
		}
		start := time.Now().UnixMilli() / period.Milliseconds()
		var codes []int
		for range n {
			resp, _ := get(t, "http://localhost:8080/")
			codes = append(codes, resp.StatusCode)
		}
		if time.Now().UnixMilli()/period.Milliseconds() == start {
			return codes
		}
		t.Logf("the burst crossed a rate period boundary; again on a fresh entry")
	}
	t.Fatalf("%d requests never fit in one %v period", n, period)
	return nil
}

// TestQuickstartPassthrough follows the passthrough walkthrough:
// pass.localhost reaches its backend still encrypted, with the client and
// the SNI in the PROXY header, localhost stays the edge's own site, and a
// connection to the HTTPS port that is not TLS is closed without an answer.
func TestQuickstartPassthrough(t *testing.T) {
	startQuickstart(t)
	curl := harness.Peer(t, "curl", "curl")
	var out []byte
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, err = exec.Command(curl, "-sk", "--resolve", "pass.localhost:8443:127.0.0.1", "https://pass.localhost:8443/").CombinedOutput()
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if want := "backend: TLS terminated here, client 127.0.0.1, SNI from the PROXY header: pass.localhost\n"; err != nil || string(out) != want {
		t.Errorf("passthrough: %v %q, want %q", err, out, want)
	}
	if resp, body := get(t, "https://localhost:8443/"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "Demo origin") {
		t.Errorf("the edge's own site: %d %q", resp.StatusCode, body)
	}
	conn, err := net.DialTimeout("tcp", "127.0.0.1:8443", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = conn.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	if n, _ := conn.Read(make([]byte, 100)); n != 0 {
		t.Errorf("a plain-text connection to :8443 got %d bytes back", n)
	}
}

// TestQuickstartCaches follows the caching walkthrough: the demo page is a
// miss, then a hit, both scrubbed; the cache's API on the admin endpoint
// lists it, purges it, and flushes everything; the same request to the
// public site purges nothing; the per-IP limit holds for pages from the
// cache.
func TestQuickstartCaches(t *testing.T) {
	c := startQuickstart(t)
	status := func(resp *http.Response) string {
		return resp.Header.Get("Cache-Status")
	}
	const site = "http://localhost:8080"
	miss, missBody := get(t, site+"/")
	hit, hitBody := get(t, site+"/")
	if !strings.Contains(status(miss), "fwd=uri-miss; stored") || !strings.Contains(status(hit), "; hit;") {
		t.Fatalf("Cache-Status: %q then %q, want a miss (stored) then a hit", status(miss), status(hit))
	}
	if hitBody != missBody || strings.Contains(hitBody, "10.0.0.10") || hit.Header.Get("Server") != "" ||
		hit.Header.Get("X-Powered-By") != "" || !strings.Contains(hitBody, `href="`+site+`/login"`) {
		t.Errorf("the hit is not the scrubbed page: %v %q", hit.Header, hitBody)
	}
	if hit.Header.Get("X-Rate-10s") != "2" {
		t.Errorf("X-Rate-10s on the hit = %q, want 2 (the client's own rate, not the stored one)", hit.Header.Get("X-Rate-10s"))
	}
	if code, keys := c.AdminRequest(http.MethodGet, "/souin-api/souin", nil); code != http.StatusOK || keys != `["GET-http-localhost:8080-/"]` {
		t.Errorf("GET /souin-api/souin: %d %s", code, keys)
	}
	// The https site has its own entry, rewritten for https.
	for range 2 {
		resp, body := get(t, "https://localhost:8443/")
		if !strings.Contains(body, `href="https://localhost:8443/login"`) || strings.Contains(body, "http://localhost:8080") {
			t.Errorf("https page (%s) is not the one rewritten for https: %q", status(resp), body)
		}
	}

	// One URL.
	purge := `{"type": "uri-prefix", "selectors": ["localhost:8080/"], "purge": true}`
	if code, body := c.AdminRequest(http.MethodPost, "/souin-api/souin", strings.NewReader(purge)); code != http.StatusOK {
		t.Fatalf("purge one URL: %d %s", code, body)
	}
	if resp, _ := get(t, site+"/"); !strings.Contains(status(resp), "fwd=uri-miss; stored") {
		t.Errorf("after the purge: %q, want a miss", status(resp))
	}
	// Not from the public site: the demo origin answers PURGE like any
	// request, and the page stays cached.
	req, _ := http.NewRequest("PURGE", site+"/souin-api/souin/flush", nil)
	if resp, err := client.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	if resp, _ := get(t, site+"/"); !strings.Contains(status(resp), "; hit;") {
		t.Errorf("a PURGE to the public site emptied the cache: %q", status(resp))
	}
	// Everything.
	if code, body := c.AdminRequest("PURGE", "/souin-api/souin/flush", nil); code != http.StatusNoContent {
		t.Fatalf("PURGE flush: %d %s", code, body)
	}
	if resp, _ := get(t, site+"/"); !strings.Contains(status(resp), "fwd=uri-miss; stored") {
		t.Errorf("after the flush: %q, want a miss", status(resp))
	}

	// The limit holds for hits: 20 requests in 10s, whether from the
	// cache or not (8 so far, both sites count).
	var codes []int
	for range 16 {
		resp, _ := get(t, site+"/")
		codes = append(codes, resp.StatusCode)
	}
	if codes[11] != http.StatusOK || codes[12] != http.StatusTooManyRequests || codes[15] != http.StatusTooManyRequests {
		t.Errorf("requests 9-24 from one client: %v, want 200 up to the 20th, then 429", codes)
	}
}
