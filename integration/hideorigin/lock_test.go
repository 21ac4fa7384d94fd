package hideorigin_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// TestOriginLockHandleErrors: a refused request is an HTTP error that the
// site's handle_errors routes answer with their own page.
func TestOriginLockHandleErrors(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	harness.RunCaddyfile(t, fmt.Sprintf(`{
	auto_https off
}
http://%s {
	origin_lock %s
	respond "inside" 200
	handle_errors 403 {
		header Content-Type text/plain
		respond "our own refusal page: {err.status_code} {err.message}" 403
	}
}
`, addr, edgeKey))
	harness.WaitListening(t, addr, 10*time.Second)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := "our own refusal page: 403 origin_lock: missing: "
	if resp.StatusCode != http.StatusForbidden || len(body) < len(want) || string(body[:len(want)]) != want {
		t.Fatalf("refused request: %d %q, want 403 starting %q", resp.StatusCode, body, want)
	}
}
