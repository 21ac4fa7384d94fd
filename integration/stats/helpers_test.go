// Package stats_test runs the stats page, the per-upstream figures and the
// runtime upstream states end to end, in-process, with real origins,
// a real passthrough TLS backend and a real headless Chromium.
package stats_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// origin is an HTTP origin that names itself in every response, counts the
// requests it got and those in flight; /slow?ms=N answers after N ms.
type origin struct {
	name     string
	addr     string
	requests atomic.Int64
	inFlight atomic.Int64
	srv      *http.Server
}

func startOrigin(t testing.TB, name string) *origin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &origin{name: name, addr: ln.Addr().String()}
	o.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.requests.Add(1)
		o.inFlight.Add(1)
		defer o.inFlight.Add(-1)
		if ms, err := strconv.Atoi(r.URL.Query().Get("ms")); err == nil && ms > 0 {
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		if code, err := strconv.Atoi(r.URL.Query().Get("status")); err == nil {
			w.WriteHeader(code)
		}
		fmt.Fprintf(w, "origin=%s\n", name)
	})}
	go func() { _ = o.srv.Serve(ln) }()
	t.Cleanup(func() { _ = o.srv.Close() })
	return o
}

// client is an HTTP client for the edge that keeps connections alive.
var client = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// get fetches a URL and returns status and body.
func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// snapshot is the part of stats.json the tests read.
type snapshot struct {
	Admin     bool `json:"admin"`
	Upstreams []struct {
		Kind         string            `json:"kind"`
		Group        string            `json:"group"`
		Address      string            `json:"address"`
		State        string            `json:"state"`
		StateBy      string            `json:"state_by"`
		KeepSticky   bool              `json:"keep_sticky"`
		Healthy      bool              `json:"healthy"`
		Current      int64             `json:"current"`
		Requests     uint64            `json:"requests"`
		Responses    map[string]uint64 `json:"responses"`
		LatencyAvgMs float64           `json:"latency_avg_ms"`
		LatencyP99Ms float64           `json:"latency_p99_ms"`
		Checks       *struct {
			LastAt     *time.Time `json:"last_at"`
			LastOK     bool       `json:"last_ok"`
			Fails      int64      `json:"fails"`
			FailsTotal uint64     `json:"fails_total"`
		} `json:"checks"`
	} `json:"upstreams"`
	StickTables []struct {
		Name    string            `json:"name"`
		Used    int               `json:"used"`
		Top     []json.RawMessage `json:"top"`
		Cluster *struct {
			Mode      string   `json:"mode"`
			Connected bool     `json:"connected"`
			LastSync  string   `json:"last_sync"`
			Edges     []string `json:"edges"`
			Syncs     uint64   `json:"syncs"`
			Errors    uint64   `json:"errors"`
		} `json:"cluster"`
	} `json:"stick_tables"`
	Sections []struct {
		Name string `json:"name"`
		Rows []struct {
			Metric string  `json:"metric"`
			Labels string  `json:"labels"`
			Value  float64 `json:"value"`
		} `json:"rows"`
	} `json:"sections"`
}

func stats(t testing.TB, c *harness.Caddy) snapshot {
	t.Helper()
	status, body := c.AdminRequest(http.MethodGet, "/rampart/stats.json", nil)
	if status != http.StatusOK {
		t.Fatalf("stats.json: %d %s", status, body)
	}
	var s snapshot
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("stats.json: %v\n%s", err, body)
	}
	return s
}

// setState PUTs an upstream's state through the admin API.
func setState(t testing.TB, c *harness.Caddy, addr, state string) {
	t.Helper()
	status, body := c.AdminRequest(http.MethodPut, "/rampart/upstreams/"+addr, strings.NewReader(`{"state": "`+state+`"}`))
	if status != http.StatusOK {
		t.Fatalf("PUT %s %s: %d %s", addr, state, status, body)
	}
}

// load runs requests against url from workers goroutines until stop is
// closed, and counts the failures (transport errors and non-200 answers)
// and which origin answered.
type load struct {
	mu       sync.Mutex
	ok       int
	failures []string
	by       map[string]int
	wg       sync.WaitGroup
	stop     chan struct{}
}

func startLoad(url string, workers int) *load {
	l := &load{by: map[string]int{}, stop: make(chan struct{})}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := client.Get(url)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				l.mu.Lock()
				switch {
				case err != nil:
					l.failures = append(l.failures, err.Error())
				case resp.StatusCode != http.StatusOK:
					l.failures = append(l.failures, fmt.Sprintf("%d %s", resp.StatusCode, body))
				default:
					l.ok++
					l.by[strings.TrimSpace(string(body))]++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// finish stops the load and returns the successes and failures.
func (l *load) finish() (ok int, failures []string) {
	close(l.stop)
	l.wg.Wait()
	return l.ok, l.failures
}

// waitFor polls cond every 20 ms until it holds or within passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out after %v waiting for %s", within, what)
}
