package stats_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// do sends a request to the edge with optional basic auth and headers.
func do(t testing.TB, method, url, body string, auth bool, header map[string]string) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if auth {
		req.SetBasicAuth("ops", "s3cret")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var tokenRE = regexp.MustCompile(`data-token="([0-9a-f]*)"`)

// TestHandlerBehindBasicAuth: rampart_stats on a site behind basic_auth
// answers 401 without credentials; with `admin` it changes states only
// with the page's token; without `admin` it is read-only.
func TestHandlerBehindBasicAuth(t *testing.T) {
	a := startOrigin(t, "a")
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	port := harness.FreePort(t)
	edge := fmt.Sprintf("http://127.0.0.1:%d", port)
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	auto_https off
}

http://127.0.0.1:%d {
	handle /stats* {
		basic_auth {
			ops %s
		}
		rampart_stats admin
	}
	handle /view* {
		rampart_stats
	}
	handle {
		reverse_proxy %s
	}
}
`, port, hash, a.addr))
	harness.WaitListening(t, strings.TrimPrefix(edge, "http://"), 10*time.Second)
	t.Cleanup(func() {
		c.AdminRequest(http.MethodPut, "/rampart/upstreams/"+a.addr, strings.NewReader(`{"state":"ready"}`))
	})
	get(t, edge+"/")

	for _, path := range []string{"/stats", "/stats.json", "/stats.csv"} {
		if status, _ := do(t, http.MethodGet, edge+path, "", false, nil); status != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: %d, want 401", path, status)
		}
	}
	if status, _ := do(t, http.MethodPut, edge+"/stats/upstreams/"+a.addr, `{"state":"drain"}`, false, nil); status != http.StatusUnauthorized {
		t.Errorf("PUT without credentials: %d, want 401", status)
	}

	status, page := do(t, http.MethodGet, edge+"/stats", "", true, nil)
	m := tokenRE.FindStringSubmatch(page)
	if status != http.StatusOK || m == nil || m[1] == "" || !strings.Contains(page, `data-json="/stats.json"`) || !strings.Contains(page, `data-upstreams="/stats/upstreams/"`) {
		t.Fatalf("admin page: %d %.300s", status, page)
	}
	token := m[1]
	status, body := do(t, http.MethodGet, edge+"/stats.json", "", true, nil)
	var snap snapshot
	if status != http.StatusOK || json.Unmarshal([]byte(body), &snap) != nil || !snap.Admin || len(snap.Upstreams) == 0 {
		t.Errorf("admin stats.json: %d %.300s", status, body)
	}
	if status, body := do(t, http.MethodPut, edge+"/stats/upstreams/"+a.addr, `{"state":"drain"}`, true, nil); status != http.StatusForbidden || !strings.Contains(body, `"error"`) || !strings.Contains(body, "X-Rampart-Token") {
		t.Errorf("PUT without the token: %d %s, want a 403 JSON error", status, body)
	}
	if status, body := do(t, http.MethodPut, edge+"/stats/upstreams/"+a.addr, `{"state":"drain"}`, true, map[string]string{"X-Rampart-Token": token}); status != http.StatusOK || !strings.Contains(body, `"state":"drain"`) || !strings.Contains(body, `"state_by":"ops@127.0.0.1:`) {
		t.Errorf("PUT with the token: %d %s", status, body)
	}
	if status, body := do(t, http.MethodPut, edge+"/stats/upstreams/127.0.0.1:1", `{"state":"drain"}`, true, map[string]string{"X-Rampart-Token": token}); status != http.StatusNotFound || !strings.Contains(body, `"error"`) {
		t.Errorf("PUT an unknown upstream: %d %s, want a 404 JSON error", status, body)
	}

	// read-only: no token on the page, no state change
	status, page = do(t, http.MethodGet, edge+"/view", "", false, nil)
	if m := tokenRE.FindStringSubmatch(page); status != http.StatusOK || m == nil || m[1] != "" {
		t.Errorf("read-only page: %d, token %v", status, m)
	}
	status, body = do(t, http.MethodGet, edge+"/view.json", "", false, nil)
	if status != http.StatusOK || !strings.Contains(body, `"admin":false`) || !strings.Contains(body, `"state":"drain"`) {
		t.Errorf("read-only stats.json: %d %.300s", status, body)
	}
	if status, body := do(t, http.MethodPut, edge+"/view/upstreams/"+a.addr, `{"state":"ready"}`, false, map[string]string{"X-Rampart-Token": token}); status != http.StatusForbidden || !strings.Contains(body, "read-only") {
		t.Errorf("PUT on the read-only page: %d %s, want 403", status, body)
	}
}
