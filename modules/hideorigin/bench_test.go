package hideorigin

import (
	"context"
	"net/http"
	"net/http/httptest"
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
