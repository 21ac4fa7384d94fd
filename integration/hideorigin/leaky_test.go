// Package hideorigin_test runs hide_origin, origin_lock and origin-audit end
// to end: a deliberately leaky origin behind an in-process Caddy edge.
package hideorigin_test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// leakyOrigin is an application that leaks its identity in every way the
// issue lists. base is the address it believes it lives at
// (http://127.0.0.1:port of the origin's own Caddy); it also names
// origin.internal and [fd00::10]:8443.
type leakyOrigin struct {
	addr string
	base string
	// lastXFF is the X-Forwarded-For the application saw last.
	lastXFF chan string
}

func startLeakyOrigin(t *testing.T, base string) *leakyOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &leakyOrigin{addr: ln.Addr().String(), base: base, lastXFF: make(chan string, 64)}
	srv := &http.Server{Handler: o.mux(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return o
}

func (o *leakyOrigin) html() string {
	return `<!doctype html><html><head><link rel="stylesheet" href="` + o.base + `/style.css">
<script src="//origin.internal/app.js"></script></head><body>
<a href="` + o.base + `/">home</a> served by origin.internal
<script>var ws = new WebSocket("ws://[fd00::10]:8443/socket");</script>
</body></html>
`
}

func (o *leakyOrigin) mux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		select {
		case o.lastXFF <- r.Header.Get("X-Forwarded-For"):
		default:
		}
		if r.URL.Path != "/" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, "404 page not found on origin.internal (%s)\n", o.base)
			return
		}
		h := w.Header()
		h.Set("Server", "Apache/2.4.41 (Ubuntu)")
		h.Set("X-Powered-By", "PHP/7.4.3")
		h.Set("X-Backend-Server", strings.TrimPrefix(o.base, "http://"))
		h.Set("Content-Location", o.base+"/index.html")
		h.Set("Refresh", "300; url="+o.base+"/")
		h.Set("Link", "<"+o.base+"/style.css>; rel=preload; as=style")
		h.Add("Set-Cookie", "sid=42; Domain=origin.internal; Path=/; HttpOnly")
		h.Set("Access-Control-Allow-Origin", "http://origin.internal:8080")
		h.Set("Content-Security-Policy", "default-src 'self' "+o.base+" ws://origin.internal")
		h.Set("Alt-Svc", `h3="origin.internal:443"; ma=86400`)
		h.Set("X-Upstream-Url", "http://[fd00::10]:8443/x")
		h.Set("Content-Type", "text/html; charset=utf-8")
		body := o.html()
		h.Set("Content-Length", fmt.Sprint(len(body)))
		w.Write([]byte(body))
	})
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, o.base+"/login/form", http.StatusFound)
	})
	mux.HandleFunc("/gz", func(w http.ResponseWriter, r *http.Request) {
		// gzip whatever the client accepts, as careless origins do
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		zw.Write([]byte(o.html()))
		zw.Close()
	})
	mux.HandleFunc("/zst", func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		zw, _ := zstd.NewWriter(&b)
		zw.Write([]byte(`{"socket":"wss://origin.internal/socket","api":"` + o.base + `/api"}`))
		zw.Close()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "zstd")
		w.Header().Set("Content-Length", fmt.Sprint(b.Len()))
		w.Write(b.Bytes())
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		// no Content-Length: chunked; the origin URL is split across two
		// chunks sent 50 ms apart
		w.Header().Set("Content-Type", "text/html")
		half := len(o.base) / 2
		fmt.Fprintf(w, "<p>part one</p><a href=\"%s", o.base[:half])
		w.(http.Flusher).Flush()
		time.Sleep(50 * time.Millisecond)
		fmt.Fprintf(w, "%s/next\">next</a>\n", o.base[half:])
	})
	mux.HandleFunc("/api/data", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"self":"%s/api/data","events":"wss://origin.internal/socket"}`, o.base)
	})
	mux.HandleFunc("/error", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, "panic: database unreachable\n\ngoroutine 1 [running]:\nmain.handler()\n\t/srv/app/main.go:42 +0x1d\nlistening on %s\n", o.base)
	})
	mux.HandleFunc("/doc.txt", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		http.ServeContent(w, r, "doc.txt", time.Unix(1_700_000_000, 0), strings.NewReader(strings.Repeat("see "+o.base+"/doc ", 50)))
	})
	mux.HandleFunc("/br", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Encoding", "br")
		w.Write([]byte{0x1b, 0x2a, 0x00, 0xf8, 0x8d, 0x94, 0x6e, 0xde}) // not decodable by the edge
	})
	// evasions: the origin's identity wrapped or spelled so that a naive
	// scrubber misses it
	mux.HandleFunc("/ev/two-codings", func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Encoding"] = []string{"identity", "gzip"}
		w.Header().Set("Content-Type", "text/html")
		zw := gzip.NewWriter(w)
		fmt.Fprintf(zw, `<a href="%s/">home</a>`, o.base)
		zw.Close()
	})
	mux.HandleFunc("/ev/encoded", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "/login?next="+url.QueryEscape(o.base+"/admin"))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusFound)
		fmt.Fprintf(w, `{"next":%q}`, url.QueryEscape(url.QueryEscape(o.base+"/admin")))
	})
	evasionBodies := map[string]struct{ contentType, body string }{
		"/ev/script.js":    {"text/javascript", `fetch("` + o.base + `/api")`},
		"/ev/page.xhtml":   {"application/xhtml+xml", `<html><a href="//origin.internal/">x</a></html>`},
		"/ev/logo.svg":     {"image/svg+xml", `<svg><a href="` + o.base + `/"/></svg>`},
		"/ev/feed.xml":     {"text/xml", `<feed><link>` + o.base + `/feed</link></feed>`},
		"/ev/ld.json":      {"application/ld+json", `{"@id":"` + o.base + `/thing"}`},
		"/ev/problem.json": {"application/problem+json", `{"instance":"` + o.base + `/orders/1"}`},
		"/ev/untyped":      {"", `<!doctype html><a href="` + o.base + `/">untyped</a>`},
		"/ev/decimal":      {"text/html", `<a href="http://167772170:8080/">decimal</a>`},
		"/ev/octal":        {"text/html", `<a href="http://012.0.0.012:8080/">octal</a>`},
		"/ev/hex":          {"text/html", `<a href="http://0x0a00000a:8080/">hex</a>`},
		"/ev/mapped":       {"text/html", `<a href="http://[::ffff:a00:a]:8080/">mapped</a> <a href="http://[::ffff:10.0.0.10]:8080/">mapped</a>`},
		"/ev/ipv6":         {"text/html", `<a href="http://[fd00:0::10]:8443/">ipv6</a>`},
		"/ev/trailing-dot": {"text/html", `<a href="http://origin.internal./x">dot</a>`},
	}
	for path, e := range evasionBodies {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil // no sniffing by net/http either
			if e.contentType != "" {
				w.Header().Set("Content-Type", e.contentType)
			}
			fmt.Fprint(w, e.body)
		})
	}
	mux.HandleFunc("/mention", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<a href="http://%s/">the other backend</a>`, r.URL.Query().Get("addr"))
	})
	mux.HandleFunc("/trailer", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Origin-Trace")
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write([]byte("body"))
		w.Header().Set("X-Origin-Trace", "served by "+o.base)
	})
	mux.HandleFunc("/hints", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "<"+o.base+"/style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, "after hints")
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		// a minimal upgrade: 101, then echo bytes (origin identities in the
		// stream are not rewritten: frames are opaque)
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nServer: Apache\r\nX-Backend-Server: " + strings.TrimPrefix(o.base, "http://") + "\r\n\r\n")
		rw.Flush()
		// echo until the client closes: the tunnel may deliver a message
		// in several reads
		buf := make([]byte, 64)
		for {
			n, err := rw.Read(buf)
			if n > 0 {
				conn.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/echo-xff", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		fmt.Fprintf(w, "xff=%s sig=%s", r.Header.Get("X-Forwarded-For"), r.Header.Get("Rampart-Edge-Signature"))
		for _, h := range []string{"Forwarded", "X-Real-Ip", "True-Client-Ip"} {
			if v := r.Header.Get(h); v != "" {
				fmt.Fprintf(w, " %s=%s", h, v)
			}
		}
	})
	return mux
}
