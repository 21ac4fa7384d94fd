package hideorigin_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// flushBody is the plain text a flushing origin sends for one seed, with
// origin written wherever the origin names itself: the origin's own address
// for what it sends, the public site for what the client must receive.
func flushBody(seed uint64, origin string) string {
	rng := rand.New(rand.NewPCG(seed, 7))
	var b strings.Builder
	for range 3000 { // a fixed count: the text must not depend on the names' lengths
		switch rng.IntN(4) {
		case 0:
			fmt.Fprintf(&b, `<a href="%s/page/%d">link</a>`, origin, rng.IntN(1000))
		case 1:
			b.WriteString(strings.Repeat("lorem ipsum dolor ", 1+rng.IntN(40)))
		case 2:
			fmt.Fprintf(&b, "<p>served by %s</p>\n", strings.TrimPrefix(origin, "http://"))
		default:
			b.WriteString("<div>" + strconv.Itoa(rng.IntN(1e9)) + "</div>\n")
		}
	}
	return b.String()
}

// flushingOrigin serves /body?seed=&enc=&cl=: the body of flushBody in
// small pieces, each followed by a flush (of the compressor too), so that
// the edge receives identities cut at every place, between its flushes.
// With cl=1 the whole encoded length is announced first.
func flushingOrigin(t *testing.T, self string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		seed, _ := strconv.ParseUint(q.Get("seed"), 10, 64)
		plain := []byte(flushBody(seed, self))
		enc := q.Get("enc")
		rng := rand.New(rand.NewPCG(seed, 11))
		// encode in pieces: the pieces' boundaries become the flush points
		var encoded bytes.Buffer
		var cuts []int
		var cw interface {
			io.Writer
			Flush() error
			Close() error
		}
		switch enc {
		case "gzip":
			cw = gzip.NewWriter(&encoded)
		case "zstd":
			cw, _ = zstd.NewWriter(&encoded)
		}
		for rest := plain; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(3000))
			if cw != nil {
				cw.Write(rest[:n])
				cw.Flush()
			} else {
				encoded.Write(rest[:n])
			}
			cuts = append(cuts, encoded.Len())
			rest = rest[n:]
		}
		if cw != nil {
			cw.Close()
			cuts = append(cuts, encoded.Len())
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if enc != "" {
			w.Header().Set("Content-Encoding", enc)
		}
		if q.Get("cl") == "1" {
			w.Header().Set("Content-Length", strconv.Itoa(encoded.Len()))
		}
		w.WriteHeader(http.StatusOK)
		out := encoded.Bytes()
		prev := 0
		for _, c := range cuts {
			if c == prev {
				continue
			}
			w.Write(out[prev:c])
			w.(http.Flusher).Flush()
			prev = c
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// decodeBody undoes the response's Content-Encoding.
func decodeBody(enc string, body []byte) ([]byte, error) {
	switch enc {
	case "":
		return body, nil
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(zr)
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		return io.ReadAll(zr)
	}
	return nil, fmt.Errorf("unexpected coding %q", enc)
}

// readSlowly reads the body in small pieces with pauses now and then, as a
// client on a slow link does, so the edge's writes block between flushes.
func readSlowly(r io.Reader, slow bool) ([]byte, error) {
	if !slow {
		return io.ReadAll(r)
	}
	var out bytes.Buffer
	buf := make([]byte, 1500)
	for i := 0; ; i++ {
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
		if i%8 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// TestFlushingOriginByteExact runs hide_origin in front of Caddy's own
// reverse_proxy (default flushing, and flush_interval -1) with an origin
// that flushes mid-identity, for every coding, with and without a
// Content-Length, 30 times each, with a client that reads slowly in half of
// the runs: every body must be the reference rewrite, byte for byte.
func TestFlushingOriginByteExact(t *testing.T) {
	edgeDefault := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	edgeFlush := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	// the origin believes it is origin.internal:8080
	const self = "http://origin.internal:8080"
	origin := flushingOrigin(t, self)
	harness.RunCaddyfile(t, fmt.Sprintf(`{
	auto_https off
}
http://%[1]s {
	hide_origin origin.internal:8080
	reverse_proxy %[3]s
}
http://%[2]s {
	hide_origin origin.internal:8080
	reverse_proxy %[3]s {
		flush_interval -1
	}
}
`, edgeDefault, edgeFlush, origin))
	harness.WaitListening(t, edgeDefault, 10*time.Second)
	harness.WaitListening(t, edgeFlush, 10*time.Second)
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 8}}
	const runs = 30
	for _, edge := range []struct{ name, addr string }{{"default", edgeDefault}, {"flush_interval_-1", edgeFlush}} {
		for _, enc := range []string{"", "gzip", "zstd"} {
			for _, cl := range []string{"0", "1"} {
				name := fmt.Sprintf("%s/enc=%s/content_length=%s", edge.name, enc, cl)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					var mu sync.Mutex
					failures := 0
					var wg sync.WaitGroup
					for run := range runs {
						wg.Add(1)
						go func() {
							defer wg.Done()
							seed := uint64(run*131 + len(name))
							err := fetchExact(client, edge.addr, seed, enc, cl, run%2 == 0)
							if err != nil {
								mu.Lock()
								if failures < 3 {
									t.Errorf("run %d (seed %d): %v", run, seed, err)
								}
								failures++
								mu.Unlock()
							}
						}()
						if run%4 == 3 {
							wg.Wait() // at most four at a time
						}
					}
					wg.Wait()
					if failures > 0 {
						t.Errorf("%d of %d responses were not the exact rewrite", failures, runs)
					}
				})
			}
		}
	}
}

func fetchExact(client *http.Client, edge string, seed uint64, enc, cl string, slow bool) error {
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/body?seed=%d&enc=%s&cl=%s", edge, seed, enc, cl), nil)
	// what browsers send; without it Caddy's transport would decode gzip itself
	req.Header.Set("Accept-Encoding", "gzip, deflate, zstd")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := readSlowly(resp.Body, slow)
	if err != nil {
		return fmt.Errorf("reading the body (%d bytes so far): %v", len(raw), err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %.200q", resp.StatusCode, raw)
	}
	if got := resp.Header.Get("Content-Encoding"); got != enc {
		return fmt.Errorf("Content-Encoding %q, want %q", got, enc)
	}
	plain, err := decodeBody(enc, raw)
	if err != nil {
		return fmt.Errorf("decoding %d bytes: %v", len(raw), err)
	}
	want := flushBody(seed, "http://"+edge)
	if string(plain) != want {
		i := 0
		for i < len(plain) && i < len(want) && plain[i] == want[i] {
			i++
		}
		return fmt.Errorf("body differs at byte %d of %d (want %d): got %.80q want %.80q", i, len(plain), len(want), plain[i:], want[min(i, len(want)):])
	}
	return nil
}
