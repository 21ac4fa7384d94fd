// Package cache_test runs the Caddy project's cache-handler as the suite
// builds it, in front of hide_origin and Caddy's own reverse_proxy, behind
// it an origin Caddy with origin_lock and a real application that leaks its
// identity: responses from the cache are scrubbed ones, the cache's headers
// never name the origin, revalidations are signed, stick limits hold for
// cache hits, Vary and Authorization are honoured, and purge works through
// the admin API only.
package cache_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
	"github.com/rampart-edge/caddy-rampart/modules/hideorigin/audit"
)

const (
	edgeKey    = "cache-test-edge-key-0123456789"
	originName = "origin.internal"
	// rateLimit is the number of requests per 10s a client (by its
	// X-Client header) may make to the edge.
	rateLimit = 5
)

// app is the application behind the origin: it names itself and its own
// address everywhere, and records what reaches it (only requests that got
// through origin_lock do).
type app struct {
	srv  *httptest.Server
	addr string // 127.0.0.1:port

	mu       sync.Mutex
	requests []*http.Request // what reached the app, in order
}

func (a *app) count(path string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, r := range a.requests {
		if r.URL.Path == path {
			n++
		}
	}
	return n
}

func (a *app) total() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.requests)
}

func (a *app) last(path string) *http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := len(a.requests) - 1; i >= 0; i-- {
		if a.requests[i].URL.Path == path {
			return a.requests[i]
		}
	}
	return nil
}

func startApp(t *testing.T) *app {
	t.Helper()
	a := &app{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.requests = append(a.requests, r.Clone(context.Background()))
		a.mu.Unlock()
		h := w.Header()
		h.Set("Server", "Apache/2.4.41 (Ubuntu)")
		h.Set("X-Powered-By", "PHP/7.4.3")
		h.Set("X-Backend-Server", originName)
		self := "http://" + a.addr
		page := func(extra string) string {
			return fmt.Sprintf("<!doctype html>\n<p><a href=\"%s/next\">next</a> <a href=\"http://%s/x\">x</a> %s</p>\n%s\n",
				self, originName, extra, strings.Repeat("padding ", 100))
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			// Other methods (PURGE included): 405, as a real application
			// answers. A non-error answer to an unsafe method would make
			// the cache drop the URL (RFC 9111, 4.4).
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		switch r.URL.Path {
		case "/page", "/purge-a", "/purge-b", "/limited":
			h.Set("Cache-Control", "public, max-age=60")
			h.Set("Content-Type", "text/html; charset=utf-8")
			h.Set("Content-Location", self+r.URL.Path)
			io.WriteString(w, page(r.URL.Path))
		case "/moved":
			h.Set("Cache-Control", "public, max-age=60")
			h.Set("Location", self+"/page")
			w.WriteHeader(http.StatusMovedPermanently)
		case "/reval":
			// Stored, but to be revalidated with the origin on every use.
			// (No ETag: cache-handler v0.16.0 serves a no-cache response
			// that has one as a fresh hit, without asking the origin.)
			h.Set("Cache-Control", "no-cache")
			h.Set("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")
			h.Set("Content-Type", "text/html; charset=utf-8")
			if r.Header.Get("If-Modified-Since") == "Mon, 01 Jan 2024 00:00:00 GMT" {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			io.WriteString(w, page("revalidated"))
		case "/vary":
			h.Set("Cache-Control", "public, max-age=60")
			h.Set("Vary", "Accept-Language")
			h.Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintf(w, "language %s from %s\n", r.Header.Get("Accept-Language"), self)
		case "/account":
			// A response to an authorised request, with a max-age but no
			// public/s-maxage/must-revalidate: a shared cache must not
			// give it to anyone else (RFC 9111, 3.5).
			h.Set("Cache-Control", "max-age=60")
			h.Set("Content-Type", "text/plain; charset=utf-8")
			if auth := r.Header.Get("Authorization"); auth != "" {
				fmt.Fprintf(w, "account of %s\n", auth)
				return
			}
			io.WriteString(w, "anonymous\n")
		default:
			http.NotFound(w, r)
		}
	}))
	a.addr = a.srv.Listener.Addr().String()
	t.Cleanup(a.srv.Close)
	return a
}

// setup is the whole chain: client -> edge (track, tarpit, cache,
// hide_origin, reverse_proxy) -> origin Caddy (origin_lock, reverse_proxy)
// -> app.
type setup struct {
	edge   *harness.Caddy
	app    *app
	site   string // http://localhost:port
	origin string // the origin Caddy's 127.0.0.1:port
}

func start(t *testing.T) *setup {
	t.Helper()
	a := startApp(t)
	edgePort, originPort := harness.FreePort(t), harness.FreePort(t)
	s := &setup{app: a, site: fmt.Sprintf("http://localhost:%d", edgePort), origin: fmt.Sprintf("127.0.0.1:%d", originPort)}
	s.edge = harness.RunCaddyfile(t, fmt.Sprintf(`{
	stick_table per_client {
		type string len 32
		size 1k
		expire 1m
		store http_req_rate(10s)
	}
	# the purge API, on the admin endpoint only
	cache {
		api {
			souin
		}
	}
}

http://localhost:%[1]d {
	track per_client {http.request.header.X-Client}
	@too_fast stick per_client http_req_rate gt %[5]d
	tarpit @too_fast 0s 429
	# Caddy's own Server header is set before any handler runs; hide_origin
	# removes it from the responses it sees, but cache hits never reach it
	header -Server
	cache
	hide_origin {
		origin %[3]s %[4]s
		sign %[6]s
	}
	reverse_proxy %[2]s
}

http://:%[7]d {
	bind 127.0.0.1
	origin_lock %[6]s {
		allow 127.0.0.1/32
	}
	reverse_proxy %[4]s
}
`, edgePort, s.origin, originName, a.addr, rateLimit, edgeKey, originPort))
	harness.WaitListening(t, fmt.Sprintf("127.0.0.1:%d", edgePort), 10*time.Second)
	harness.WaitListening(t, s.origin, 10*time.Second)
	return s
}

var client = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, _ := net.SplitHostPort(addr)
		return (&net.Dialer{}).DialContext(ctx, "tcp", "127.0.0.1:"+port)
	}},
}

// do sends a request with the given header lines ("Name: value") and
// returns the response with its body read.
func do(t *testing.T, method, url string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ": ")
		req.Header.Set(name, value)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return resp, string(body)
}

// leaks lists every place in a response that names the origin: its
// address or name, or its software.
func (s *setup) leaks(resp *http.Response, body string) []string {
	var found []string
	identities := []string{s.app.addr, originName, s.origin, "Apache", "PHP/"}
	for name, values := range resp.Header {
		for _, v := range values {
			for _, id := range identities {
				if strings.Contains(v, id) {
					found = append(found, fmt.Sprintf("header %s: %s", name, v))
				}
			}
		}
	}
	for _, id := range identities {
		if strings.Contains(body, id) {
			found = append(found, "body names "+id)
		}
	}
	if via := resp.Header.Get("Via"); via != "" {
		found = append(found, "Via: "+via)
	}
	return found
}

// cacheStatus reports whether the response came from the cache (a hit)
// according to its Cache-Status header (RFC 9211).
func cacheStatus(t *testing.T, resp *http.Response) (hit bool) {
	t.Helper()
	status := resp.Header.Get("Cache-Status")
	if status == "" {
		t.Fatalf("no Cache-Status header: %v", resp.Header)
	}
	for _, param := range strings.Split(status, ";") {
		if strings.TrimSpace(param) == "hit" {
			return true
		}
	}
	return false
}

func TestMissThenHitBothScrubbed(t *testing.T) {
	s := start(t)
	for _, path := range []string{"/page", "/moved"} {
		miss, missBody := do(t, http.MethodGet, s.site+path)
		hit, hitBody := do(t, http.MethodGet, s.site+path)
		if cacheStatus(t, miss) || !cacheStatus(t, hit) {
			t.Errorf("%s: Cache-Status %q then %q, want a miss then a hit", path, miss.Header.Get("Cache-Status"), hit.Header.Get("Cache-Status"))
		}
		if n := s.app.count(path); n != 1 {
			t.Errorf("%s reached the app %d times, want 1 (the second is a hit)", path, n)
		}
		for i, r := range []struct {
			resp *http.Response
			body string
		}{{miss, missBody}, {hit, hitBody}} {
			if leaks := s.leaks(r.resp, r.body); len(leaks) > 0 {
				t.Errorf("%s response %d (%s) leaks the origin: %v", path, i+1, r.resp.Header.Get("Cache-Status"), leaks)
			}
		}
		if missBody != hitBody || miss.StatusCode != hit.StatusCode {
			t.Errorf("%s: the hit differs from the miss: %d %q / %d %q", path, miss.StatusCode, missBody, hit.StatusCode, hitBody)
		}
	}
	if _, body := do(t, http.MethodGet, s.site+"/page"); !strings.Contains(body, `href="`+s.site+`/next"`) {
		t.Errorf("the cached page lost its rewritten link: %q", body)
	}
	if resp, _ := do(t, http.MethodGet, s.site+"/moved"); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != s.site+"/page" {
		t.Errorf("cached redirect: %d Location %q, want 301 to %s/page", resp.StatusCode, resp.Header.Get("Location"), s.site)
	}
}

func TestCacheHeadersNeverNameTheOrigin(t *testing.T) {
	s := start(t)
	for _, path := range []string{"/page", "/vary", "/reval", "/account", "/missing"} {
		for range 2 {
			resp, _ := do(t, http.MethodGet, s.site+path, "Authorization: Basic dTpw")
			status := resp.Header.Get("Cache-Status")
			for _, id := range []string{s.app.addr, originName, s.origin, "127.0.0.1"} {
				if strings.Contains(status, id) {
					t.Errorf("%s: Cache-Status %q names the origin (%s)", path, status, id)
				}
			}
			if !strings.Contains(status, "key=GET-http-localhost:") && !strings.Contains(status, "fwd=") {
				t.Errorf("%s: Cache-Status %q has neither the public key nor a forward reason", path, status)
			}
		}
	}
}

func TestOriginAuditCleanWithWarmCache(t *testing.T) {
	s := start(t)
	paths := []string{"/page", "/moved", "/vary", "/reval", "/account"}
	for _, p := range paths {
		do(t, http.MethodGet, s.site+p)
	}
	before := s.app.total()
	report, err := audit.Run(context.Background(), audit.Config{
		Site:        s.site,
		Origins:     []string{s.origin},
		OriginHosts: []string{s.app.addr, originName},
		Paths:       paths,
		Timeout:     5 * time.Second,
	})
	if err != nil {
		t.Fatalf("origin-audit: %v", err)
	}
	if !report.Clean() {
		var buf bytes.Buffer
		report.WriteText(&buf)
		t.Errorf("origin-audit found leaks with the cache warm:\n%s", buf.String())
	}
	after := s.app.total()
	if s.app.count("/page") != 1 {
		t.Errorf("/page reached the app %d times during the audit; the audit should have seen the cached copy", s.app.count("/page")-1)
	}
	t.Logf("origin-audit: %d requests, %d reached the app", report.Requests, after-before)
}

// TestRevalidationIsSigned: a stored response that must be revalidated
// makes the cache ask the origin again on every use; origin_lock admits
// those requests only because hide_origin signed them, and the app's 304
// gives the client the stored page.
func TestRevalidationIsSigned(t *testing.T) {
	s := start(t)
	if resp, _ := do(t, http.MethodGet, "http://"+s.origin+"/reval"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("unsigned request to the origin: %d, want 403 from origin_lock", resp.StatusCode)
	}
	first, firstBody := do(t, http.MethodGet, s.site+"/reval")
	second, secondBody := do(t, http.MethodGet, s.site+"/reval")
	if first.StatusCode != http.StatusOK || second.StatusCode != http.StatusOK || firstBody != secondBody {
		t.Errorf("revalidated responses: %d %q then %d %q", first.StatusCode, firstBody, second.StatusCode, secondBody)
	}
	if n := s.app.count("/reval"); n != 2 {
		t.Errorf("/reval reached the app %d times, want 2: the stored response is revalidated through origin_lock (Cache-Status %q, %q; Cache-Control %q)", n, first.Header.Get("Cache-Status"), second.Header.Get("Cache-Status"), second.Header.Get("Cache-Control"))
	}
	// A client's conditional request: 304, from the origin through
	// origin_lock.
	third, thirdBody := do(t, http.MethodGet, s.site+"/reval", "If-Modified-Since: Mon, 01 Jan 2024 00:00:00 GMT")
	if third.StatusCode != http.StatusNotModified || thirdBody != "" {
		t.Errorf("conditional request: %d %q, want 304", third.StatusCode, thirdBody)
	}
	last := s.app.last("/reval")
	if last == nil || last.Header.Get("Rampart-Edge-Signature") != "" || !strings.HasPrefix(last.Header.Get("X-Forwarded-For"), "127.0.0.1") {
		t.Errorf("the revalidation did not arrive as one origin_lock verified: %v", last)
	}
	for i, r := range []struct {
		resp *http.Response
		body string
	}{{first, firstBody}, {second, secondBody}, {third, thirdBody}} {
		if leaks := s.leaks(r.resp, r.body); len(leaks) > 0 {
			t.Errorf("revalidated response %d leaks: %v", i+1, leaks)
		}
	}
}

// TestRateLimitHoldsForHits: requests answered from the cache are
// tracked, and tarpit (ordered before the cache) refuses them over the
// limit.
func TestRateLimitHoldsForHits(t *testing.T) {
	s := start(t)
	do(t, http.MethodGet, s.site+"/limited") // warm the cache, no X-Client
	var codes []int
	for range rateLimit + 3 {
		resp, _ := do(t, http.MethodGet, s.site+"/limited", "X-Client: c1")
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == http.StatusOK && !cacheStatus(t, resp) {
			t.Errorf("request %d was not a hit: %s", len(codes), resp.Header.Get("Cache-Status"))
		}
	}
	for i, code := range codes {
		want := http.StatusOK
		if i >= rateLimit {
			want = http.StatusTooManyRequests
		}
		if code != want {
			t.Fatalf("hits for one client: %v, want %d × 200 then 429", codes, rateLimit)
		}
	}
	if resp, _ := do(t, http.MethodGet, s.site+"/limited", "X-Client: c2"); resp.StatusCode != http.StatusOK {
		t.Errorf("another client: %d, want 200", resp.StatusCode)
	}
	if n := s.app.count("/limited"); n != 1 {
		t.Errorf("/limited reached the app %d times, want 1", n)
	}
	status, body := s.edge.AdminRequest(http.MethodGet, "/stick-tables/per_client/c1", nil)
	if status != http.StatusOK || !strings.Contains(body, fmt.Sprintf(`"http_req_rate":%d`, rateLimit+3)) {
		t.Errorf("the table does not count every hit: %d %s", status, body)
	}
}

func TestVaryAndAuthorization(t *testing.T) {
	s := start(t)
	_, en := do(t, http.MethodGet, s.site+"/vary", "Accept-Language: en")
	_, fr := do(t, http.MethodGet, s.site+"/vary", "Accept-Language: fr")
	enHit, en2 := do(t, http.MethodGet, s.site+"/vary", "Accept-Language: en")
	if !strings.HasPrefix(en, "language en") || !strings.HasPrefix(fr, "language fr") || en2 != en {
		t.Errorf("Vary: Accept-Language: en %q, fr %q, en again %q", en, fr, en2)
	}
	if !cacheStatus(t, enHit) || s.app.count("/vary") != 2 {
		t.Errorf("Vary: the second en request should be a hit of the en variant (app saw %d)", s.app.count("/vary"))
	}
	if strings.Contains(en, s.app.addr) {
		t.Errorf("varied body names the origin: %q", en)
	}

	_, alice := do(t, http.MethodGet, s.site+"/account", "Authorization: Basic YWxpY2U6cA==")
	bobResp, bob := do(t, http.MethodGet, s.site+"/account", "Authorization: Basic Ym9iOnA=")
	anonResp, anon := do(t, http.MethodGet, s.site+"/account")
	if alice != "account of Basic YWxpY2U6cA==\n" || bob != "account of Basic Ym9iOnA=\n" || anon != "anonymous\n" {
		t.Errorf("authorised responses crossed clients: alice %q, bob %q, anonymous %q", alice, bob, anon)
	}
	if cacheStatus(t, bobResp) {
		t.Errorf("bob's response came from the cache: %s", bobResp.Header.Get("Cache-Status"))
	}
	if n := s.app.count("/account"); n != 3 {
		t.Errorf("/account reached the app %d times, want 3 (no authorised response reused)", n)
	}
	if _, again := do(t, http.MethodGet, s.site+"/account"); again != "anonymous\n" || anonResp.StatusCode != http.StatusOK {
		t.Errorf("anonymous again: %q", again)
	}
}

// TestPurge: one URL and everything through cache-handler's API on the
// admin endpoint; the same requests at the public site purge nothing.
func TestPurge(t *testing.T) {
	s := start(t)
	warm := func() {
		t.Helper()
		for _, p := range []string{"/purge-a", "/purge-b"} {
			do(t, http.MethodGet, s.site+p)
		}
	}
	isHit := func(path string) bool {
		t.Helper()
		resp, _ := do(t, http.MethodGet, s.site+path)
		return cacheStatus(t, resp)
	}
	warm()
	if !isHit("/purge-a") || !isHit("/purge-b") {
		t.Fatal("the pages are not cached")
	}

	// From the public site: the API paths and PURGE are the origin's
	// business (405 / 404 there) and remove nothing.
	host := strings.TrimPrefix(s.site, "http://")
	for _, attempt := range []struct{ method, path, body string }{
		{"PURGE", "/souin-api/souin/flush", ""},
		{"PURGE", "/souin-api/souin/.+", ""},
		{"PURGE", "/purge-a", ""},
		{http.MethodGet, "/souin-api/souin", ""},
		{http.MethodPost, "/souin-api/souin", fmt.Sprintf(`{"type":"uri","selectors":["%s/purge-a"],"purge":true}`, host)},
	} {
		req, _ := http.NewRequest(attempt.method, s.site+attempt.path, strings.NewReader(attempt.body))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || strings.Contains(string(body), "purge-a") {
			t.Errorf("public %s %s: %d %q, want the origin's refusal", attempt.method, attempt.path, resp.StatusCode, body)
		}
	}
	if !isHit("/purge-a") || !isHit("/purge-b") {
		t.Fatal("a request to the public site purged the cache")
	}

	// One URL, by its cache key's host and path.
	// The API lists the stored keys: the public host, never the origin.
	status, keys := s.edge.AdminRequest(http.MethodGet, "/souin-api/souin", nil)
	if status != http.StatusOK || !strings.Contains(keys, `"GET-http-`+host+`-/purge-a"`) ||
		strings.Contains(keys, s.app.addr) || strings.Contains(keys, s.origin) {
		t.Errorf("GET /souin-api/souin: %d %s", status, keys)
	}
	// uri-prefix: the URL and the ones below it (/purge-a?x, /purge-a/x).
	status, body := s.edge.AdminRequest(http.MethodPost, "/souin-api/souin",
		strings.NewReader(fmt.Sprintf(`{"type":"uri-prefix","selectors":["%s/purge-a"],"purge":true}`, host)))
	if status != http.StatusOK {
		t.Fatalf("purge one URL: %d %s", status, body)
	}
	if isHit("/purge-a") || !isHit("/purge-b") {
		t.Errorf("after purging /purge-a: want /purge-a a miss and /purge-b still a hit")
	}

	// Everything.
	warm()
	status, body = s.edge.AdminRequest("PURGE", "/souin-api/souin/flush", nil)
	if status >= 300 {
		t.Fatalf("purge everything: %d %s", status, body)
	}
	if isHit("/purge-a") || isHit("/purge-b") {
		t.Errorf("after PURGE /souin-api/souin/flush the pages are still hits")
	}
}
