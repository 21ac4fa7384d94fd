package audit

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/rampart-edge/caddy-rampart/modules/hideorigin/scrub"
)

func TestRunFindsAndGroups(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/go":
			http.Redirect(w, r, "/", http.StatusFound) // same site: followed
		case "/away":
			http.Redirect(w, r, "http://10.9.9.9:81/x", http.StatusFound) // off site: reported, not followed
		case "/boom":
			w.WriteHeader(500)
			fmt.Fprint(w, "Traceback (most recent call last):\n  File \"app.py\"")
		default:
			w.Header().Set("X-Backend", "10.9.9.9")
			fmt.Fprint(w, "<a href=\"//10.9.9.9/\">x</a>")
		}
	}))
	defer srv.Close()
	report, err := Run(context.Background(), Config{Site: srv.URL, Origins: []string{"10.9.9.9:81"},
		Paths: []string{"/go", "/away", "/boom"}, OnlyPaths: true, NoBypass: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"header X-Backend": false, "body text/html; charset=utf-8": false, "redirect Location": false, "error_page stack trace": false}
	for _, f := range report.Findings {
		if _, ok := want[f.Place+" "+f.Name]; ok {
			want[f.Place+" "+f.Name] = true
		}
		if strings.Contains(f.URL, "10.9.9.9") {
			t.Errorf("the audit followed a redirect off the site: %+v", f)
		}
	}
	for k, found := range want {
		if !found {
			t.Errorf("missing finding %q", k)
		}
	}
	var b bytes.Buffer
	report.WriteText(&b)
	if !strings.Contains(b.String(), "(and 1 more)") || !strings.Contains(b.String(), "leaks found") {
		t.Errorf("text report:\n%s", b.String())
	}
	if _, err := Run(context.Background(), Config{Site: "ftp://x", Origins: []string{"1.2.3.4"}}); err == nil {
		t.Error("ftp site accepted")
	}
	if _, err := Run(context.Background(), Config{Site: srv.URL}); err == nil {
		t.Error("audit without origins accepted")
	}
}

func TestReadPaths(t *testing.T) {
	file := filepath.Join(t.TempDir(), "paths")
	os.WriteFile(file, []byte("# comment\n/a\n\n  /b?x=1  \n"), 0o600)
	paths, err := ReadPaths(file)
	if err != nil || strings.Join(paths, ",") != "/a,/b?x=1" {
		t.Fatalf("%q %v", paths, err)
	}
	os.WriteFile(file, []byte("relative\n"), 0o600)
	if _, err := ReadPaths(file); err == nil {
		t.Fatal("relative path accepted")
	}
}

// BenchmarkDecodedBodyScan measures decoding and scanning a 1 MB response.
func BenchmarkDecodedBodyScan(b *testing.B) {
	body := []byte(strings.Repeat("lorem ipsum dolor sit amet ", 40000) + "http://10.9.9.9:81/")
	m, err := scrub.NewMatcher([]string{"10.9.9.9:81"})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		resp := &http.Response{Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body))}
		got, _ := decodedBody(resp, 8<<20)
		if len(m.FindAll(got)) != 1 {
			b.Fatal("match not found")
		}
	}
}

// TestRunFindsEvasions: the audit finds an origin however it is spelled
// or wrapped: two Content-Encoding lines, percent-encoded URLs, other
// notations of the address, untyped and SVG bodies, trailing-dot hosts.
func TestRunFindsEvasions(t *testing.T) {
	paths := map[string]func(w http.ResponseWriter){
		"/two-codings": func(w http.ResponseWriter) {
			w.Header()["Content-Encoding"] = []string{"identity", "gzip"}
			w.Header().Set("Content-Type", "text/html")
			w.Write(compressed("<a href=\"http://example.org/\">see 10.9.9.9:81</a>"))
		},
		"/encoded": func(w http.ResponseWriter) {
			w.Header().Set("Location", "/login?next=http%3A%2F%2F10.9.9.9%3A81%2Fadmin")
			w.WriteHeader(http.StatusFound)
		},
		"/double-encoded": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"next":"http%253A%252F%252F10.9.9.9%253A81%252F"}`)
		},
		"/decimal":  func(w http.ResponseWriter) { fmt.Fprint(w, `<a href="http://168364297/">x</a>`) },
		"/octal":    func(w http.ResponseWriter) { fmt.Fprint(w, `<a href="http://012.011.011.011:81/">x</a>`) },
		"/hex":      func(w http.ResponseWriter) { fmt.Fprint(w, `<a href="http://0x0a090909/">x</a>`) },
		"/mapped":   func(w http.ResponseWriter) { fmt.Fprint(w, `<a href="http://[::ffff:a09:909]/">x</a>`) },
		"/mapped4":  func(w http.ResponseWriter) { fmt.Fprint(w, `<a href="http://[::ffff:10.9.9.9]/">x</a>`) },
		"/ipv6":     func(w http.ResponseWriter) { fmt.Fprint(w, `<a href="http://[fd00:0::10]/">x</a>`) },
		"/trailing": func(w http.ResponseWriter) { fmt.Fprint(w, `<a href="http://origin.internal./x">x</a>`) },
		"/svg": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "image/svg+xml")
			fmt.Fprint(w, `<svg><a href="//origin.internal/"/></svg>`)
		},
		"/untyped": func(w http.ResponseWriter) {
			w.Header()["Content-Type"] = nil
			fmt.Fprint(w, `var api = "http://10.9.9.9:81/api";`)
		},
		"/clean-svg": func(w http.ResponseWriter) { w.Header().Set("Content-Type", "image/svg+xml"); fmt.Fprint(w, `<svg/>`) },
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f, ok := paths[r.URL.Path]; ok {
			f(w)
		}
	}))
	defer srv.Close()
	var list []string
	for p := range paths {
		list = append(list, p)
	}
	report, err := Run(context.Background(), Config{Site: srv.URL, Origins: []string{"10.9.9.9:81"}, OriginHosts: []string{"origin.internal", "fd00::10"},
		Paths: list, OnlyPaths: true, NoBypass: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, f := range report.Findings {
		u := f.URL[strings.Index(f.URL, srv.URL)+len(srv.URL):]
		found[u] = true
	}
	for p := range paths {
		if found[p] == (p == "/clean-svg") {
			t.Errorf("%s: found %v", p, found[p])
		}
	}
}

func compressed(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.Bytes()
}
