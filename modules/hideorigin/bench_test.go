package hideorigin

import (
	"context"
	"net/http"
	"net/http/httptest"
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

// BenchmarkServeHTTPHeaders is the per-request cost of header-only
// scrubbing: the origin answers with identifying headers and a Location.
func BenchmarkServeHTTPHeaders(b *testing.B) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &HideOrigin{Origins: []string{"10.0.0.10:8080"}, BodyOff: true}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
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
	req := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
	repl := caddy.NewReplacer()
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
	req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, map[string]any{
		caddyhttp.TrustedProxyVarKey: false, caddyhttp.ClientIPVarKey: "192.0.2.1"}))
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
