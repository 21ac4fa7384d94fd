package proxyv2_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// TestDropFloodIsSummedUp floods the listener with connections it must
// drop (trusted sources sending no header, untrusted sources, and trusted
// sources that stay silent until the header timeout) and reads the
// proxy_v2 log through Caddy's own logging config: the first drop of each
// result is logged in full, then one line per result and second, and the
// lines' counts and rampart_proxy_headers_total both add up to exactly the
// connections sent. Caddy's whole log (every logger, at its default level)
// stays a few lines long too.
func TestDropFloodIsSummedUp(t *testing.T) {
	port := harness.FreePort(t)
	logFile := t.TempDir() + "/proxy_v2.log"
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	log proxy_v2 {
		output file %s
		format json
		include caddy.listeners.proxy_v2
	}
	log everything {
		output file %s.all
		format json
	}
	servers {
		listener_wrappers {
			proxy_v2 {
				trust 127.0.0.1/32
				timeout 300ms
			}
		}
	}
}
http://:%d {
	bind 127.0.0.1
	respond ok
}
`, logFile, logFile, port))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	harness.WaitListening(t, addr, 5*time.Second)
	before := headerCounts(t, c)

	sent := map[string]int{"missing": 800, "untrusted": 800, "timeout": 160}
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range sent["missing"] / 8 {
				conn := dialFrom(t, "127.0.0.1", addr)
				_, _ = conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
				expectDropped(t, conn, "missing header")
				conn = dialFrom(t, "127.0.0.3", addr)
				expectDropped(t, conn, "untrusted source")
				if i%5 == 0 {
					silent := dialFrom(t, "127.0.0.1", addr) // dropped at the 300ms timeout
					defer expectDropped(t, silent, "silent source")
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	// A loaded machine may delay a client's request past the header
	// timeout (a "timeout" instead of a "missing"): what must be exact is
	// that every connection is counted once, and that the log agrees with
	// the metric.
	want := sent["missing"] + sent["untrusted"] + sent["timeout"]
	counted := map[string]int{}
	deadline := time.Now().Add(10 * time.Second)
	for {
		after, sum := headerCounts(t, c), 0
		for res, n := range after {
			counted[res] = int(n - before[res])
			sum += counted[res]
		}
		if sum == want && counted["untrusted"] == sent["untrusted"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rampart_proxy_headers_total rose by %v in all, want exactly %d: %v", sum, want, counted)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// the last summary lines come within a second of the last drops
	time.Sleep(2*time.Second + 500*time.Millisecond)
	logged := map[string]int{}
	lines := map[string]int{}
	f, err := os.Open(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	total := 0
	for scanner.Scan() {
		total++
		if total <= 2 {
			t.Logf("log line %d: %s", total, scanner.Text())
		}
		var line struct {
			Msg    string `json:"msg"`
			Result string `json:"result"`
			Count  int    `json:"count"`
			Peer   string `json:"peer"`
			Error  string `json:"error"`
		}
		if err := json.Unmarshal(scanner.Bytes(), &line); err != nil {
			t.Fatalf("log line %q: %v", scanner.Text(), err)
		}
		lines[line.Result]++
		switch line.Msg {
		case "connection dropped":
			logged[line.Result]++
			if line.Peer == "" || line.Error == "" {
				t.Errorf("a first drop is not logged in full: %s", scanner.Text())
			}
		case "connections dropped":
			logged[line.Result] += line.Count
		default:
			t.Errorf("unexpected line %s", scanner.Text())
		}
	}
	maxLines := 3 + int(elapsed/time.Second)
	for res, n := range counted {
		if logged[res] != n {
			t.Errorf("%s: the log accounts for %d drops, the metric for %d", res, logged[res], n)
		}
		if lines[res] > maxLines {
			t.Errorf("%s: %d log lines for %d drops in %s, want at most %d", res, lines[res], n, elapsed.Round(time.Millisecond), maxLines)
		}
	}
	// nothing else in Caddy logs a line per dropped connection either
	all, err := os.ReadFile(logFile + ".all")
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(all, []byte("\n")); n > total+20 {
		t.Errorf("the whole log has %d lines for %d dropped connections (proxy_v2's: %d):\n%s", n, want, total, all[:min(len(all), 4000)])
	}
	t.Logf("%d dropped connections in %s (%v): %d log lines", want, elapsed.Round(time.Millisecond), counted, total)
}
