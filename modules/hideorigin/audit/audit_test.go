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
