package scrub

import (
	"bytes"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
)

// benchBody is HTML-like text with an identity every ~2 KB.
func benchBody(size int) []byte {
	para := strings.Repeat("<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.</p>\n", 16)
	unit := para + `<a href="http://10.0.0.10:8080/page">origin</a>` + "\n"
	var b bytes.Buffer
	for b.Len() < size {
		b.WriteString(unit)
	}
	return b.Bytes()[:size]
}

// BenchmarkStream measures the body rewriter on plain text, one core.
func BenchmarkStream(b *testing.B) {
	m, p := testMatcher(b)
	body := benchBody(1 << 20)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		s := NewStream(io.Discard, m, p)
		for off := 0; off < len(body); off += ChunkSize {
			s.Write(body[off:min(off+ChunkSize, len(body))])
		}
		s.Close()
	}
}

// BenchmarkBodyCodings measures decode + rewrite + re-encode per coding
// (SetBytes counts the uncompressed size).
func BenchmarkBodyCodings(b *testing.B) {
	m, p := testMatcher(b)
	body := benchBody(1 << 20)
	for _, coding := range []string{"identity", "gzip", "zstd"} {
		b.Run(coding, func(b *testing.B) {
			in := body
			if coding != "identity" {
				in = compress(&testing.T{}, coding, body)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				br, _ := NewBodyRewriter(io.Discard, coding, m, p)
				for off := 0; off < len(in); off += ChunkSize {
					br.Write(in[off:min(off+ChunkSize, len(in))])
				}
				if err := br.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStream100MB rewrites a 100 MB body and reports the heap growth
// while it runs (constant memory: the figure does not grow with the body).
func BenchmarkStream100MB(b *testing.B) {
	m, p := testMatcher(b)
	chunk := benchBody(ChunkSize)
	const total = 100 << 20
	b.SetBytes(total)
	b.ReportAllocs()
	var peak uint64
	for b.Loop() {
		var before, during runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := NewStream(io.Discard, m, p)
		for off := 0; off < total; off += len(chunk) {
			s.Write(chunk)
			if off%(10<<20) == 0 {
				runtime.ReadMemStats(&during)
				if d := during.HeapAlloc - min(during.HeapAlloc, before.HeapAlloc); d > peak {
					peak = d
				}
			}
		}
		s.Close()
	}
	b.ReportMetric(float64(peak), "peak-heap-B")
}

// BenchmarkScrubHeaders measures the header pass on a typical origin
// response (no body).
func BenchmarkScrubHeaders(b *testing.B) {
	m, p := testMatcher(b)
	strip, _ := NewStripSet(nil, nil)
	hs := NewHeaderScrubber(strip)
	base := http.Header{
		"Server":         {"Apache/2.4.41 (Ubuntu)"},
		"X-Powered-By":   {"PHP/7.4.3"},
		"Content-Type":   {"text/html; charset=utf-8"},
		"Content-Length": {"1234"},
		"Date":           {"Sat, 21 Nov 2026 12:00:00 GMT"},
		"Cache-Control":  {"no-cache"},
		"Set-Cookie":     {"sid=abc; Path=/; HttpOnly"},
		"Location":       {"http://10.0.0.10:8080/login"},
	}
	b.ReportAllocs()
	h := http.Header{}
	for b.Loop() {
		for k, v := range base {
			h[k] = append(h[k][:0], v...)
		}
		hs.Scrub(m, h, p)
	}
}

// BenchmarkRewriteWholeGzip measures a small gzip body as hide_origin
// rewrites it (decoded once, re-encoded only when it names an identity):
// a 16 KB page with and without matches.
func BenchmarkRewriteWholeGzip(b *testing.B) {
	m, p := testMatcher(b)
	for _, c := range []struct {
		name string
		body []byte
	}{
		{"matches", benchBody(16 << 10)},
		{"none", bytes.ReplaceAll(benchBody(16<<10), []byte("10.0.0.10"), []byte("10.9.9.10"))},
	} {
		b.Run(c.name, func(b *testing.B) {
			in := compress(&testing.T{}, "gzip", c.body)
			var out bytes.Buffer
			b.SetBytes(int64(len(c.body)))
			b.ReportAllocs()
			for b.Loop() {
				out.Reset()
				if _, err := RewriteWhole(&out, in, "gzip", m, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRewriteWholeAfterGC is a small compressed page with matches
// right after a garbage collection (which empties sync.Pools): B/op shows
// whether the coders had to be built again.
func BenchmarkRewriteWholeAfterGC(b *testing.B) {
	m, p := testMatcher(b)
	body := benchBody(16 << 10)
	for _, coding := range []string{"gzip", "zstd"} {
		b.Run(coding, func(b *testing.B) {
			in := compress(&testing.T{}, coding, body)
			var out bytes.Buffer
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				runtime.GC()
				runtime.GC()
				out.Reset()
				b.StartTimer()
				if _, err := RewriteWhole(&out, in, coding, m, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
