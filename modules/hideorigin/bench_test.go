package hideorigin

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// nopWriter is a ResponseWriter that keeps nothing, so that the benchmark
// measures the handler and not a recorder.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

// newBenchHandler provisions a hide_origin handler outside a server.
func newBenchHandler(b testing.TB, h *Handler) (*Handler, *http.Request) {
	b.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	b.Cleanup(cancel)
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
	repl := caddy.NewReplacer()
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
	req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, map[string]any{
		caddyhttp.TrustedProxyVarKey: false, caddyhttp.ClientIPVarKey: "192.0.2.1"}))
	return h, req
}

// BenchmarkServeHTTPBody100MB streams a 100 MB chunked HTML body through the
// handler: B/op is the memory the whole body needed.
func BenchmarkServeHTTPBody100MB(b *testing.B) {
	h, req := newBenchHandler(b, &Handler{Origins: []string{"10.0.0.10:8080"}})
	chunk := []byte(strings.Repeat("<p>some text around a link to http://10.0.0.10:8080/page and more text</p>\n", 32<<10/76))
	const total = 100 << 20
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header()["Content-Type"] = []string{"text/html"}
		w.WriteHeader(200)
		for n := 0; n < total; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return err
			}
		}
		return nil
	})
	w := &nopWriter{h: http.Header{}}
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		if err := h.ServeHTTP(w, req, next); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServeHTTPHeaders is the per-request cost of header-only
// scrubbing: the origin answers with identifying headers and a Location.
func BenchmarkServeHTTPHeaders(b *testing.B) {
	h, req := newBenchHandler(b, &Handler{Origins: []string{"10.0.0.10:8080"}, BodyOff: true})
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		hd := w.Header()
		hd["Server"] = []string{"Apache/2.4.41 (Ubuntu)"}
		hd["X-Powered-By"] = []string{"PHP/7.4.3"}
		hd["Location"] = []string{"http://10.0.0.10:8080/next"}
		hd["Content-Type"] = []string{"text/plain"}
		hd["Via"] = []string{"1.1 Caddy"}
		w.WriteHeader(200)
		_, err := w.Write([]byte("hello"))
		return err
	})
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		if err := h.ServeHTTP(w, req, next); err != nil {
			b.Fatal(err)
		}
	}
	if w.h.Get("Location") != "http://example.com/next" || w.h.Get("Server") != "" {
		b.Fatalf("not scrubbed: %v", w.h)
	}
}

// htmlPage is an HTML page of about size bytes naming the origin matches
// times.
func htmlPage(size, matches int) []byte {
	var b strings.Builder
	b.WriteString("<!doctype html><html><head><title>page</title></head><body>\n")
	para := "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.</p>\n"
	link := `<a href="http://10.0.0.10:8080/page">origin</a>` + "\n"
	every := 0
	if matches > 0 {
		every = max((size-64)/len(para)/matches, 1)
	}
	for n := 0; b.Len() < size-16; n++ {
		if matches > 0 && n%every == 0 && strings.Count(b.String(), "10.0.0.10") < matches {
			b.WriteString(link)
		}
		b.WriteString(para)
	}
	b.WriteString("</body></html>\n")
	return []byte(b.String())
}

// benchmarkPage serves one page per op through the handler as
// reverse_proxy does (headers, then the body in one write); B/op beyond
// the page itself is what hide_origin allocates per response.
func benchmarkPage(b *testing.B, page []byte, contentLength bool) {
	h, req := newBenchHandler(b, &Handler{Origins: []string{"10.0.0.10:8080"}})
	length := strconv.Itoa(len(page))
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		hd := w.Header()
		hd["Content-Type"] = []string{"text/html; charset=utf-8"}
		if contentLength {
			hd["Content-Length"] = []string{length}
		}
		w.WriteHeader(200)
		_, err := w.Write(page)
		return err
	})
	w := &nopWriter{h: http.Header{}}
	b.SetBytes(int64(len(page)))
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		if err := h.ServeHTTP(w, req, next); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServeHTTPPage2KB: a 2 KB HTML page with a Content-Length and
// nothing to rewrite, the most common response.
func BenchmarkServeHTTPPage2KB(b *testing.B) { benchmarkPage(b, htmlPage(2<<10, 0), true) }

// BenchmarkServeHTTPPage2KBChunked: the same page without a Content-Length.
func BenchmarkServeHTTPPage2KBChunked(b *testing.B) { benchmarkPage(b, htmlPage(2<<10, 0), false) }

// BenchmarkServeHTTPPage64KB20: a 64 KB HTML page naming the origin 20 times.
func BenchmarkServeHTTPPage64KB20(b *testing.B) { benchmarkPage(b, htmlPage(64<<10-1, 20), true) }
