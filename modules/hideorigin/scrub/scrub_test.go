package scrub

import (
	"bytes"
	"io"
	"math/rand"
	"net/http"
	"strings"
	"testing"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

var testIDs = []string{"10.0.0.10:8080", "origin.internal", "[fd00::10]:8443", "app-7.internal"}

func testMatcher(t testing.TB) (*Matcher, *Public) {
	t.Helper()
	m, err := NewMatcher(testIDs)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePublic("https://example.com")
	if err != nil {
		t.Fatal(err)
	}
	return m, &p
}

func TestParseIdentity(t *testing.T) {
	good := map[string]string{
		"10.0.0.10:8080":            "10.0.0.10:8080",
		"10.0.0.10":                 "10.0.0.10",
		"Origin.Internal":           "origin.internal",
		"origin.internal.":          "origin.internal",
		"[fd00::10]:8443":           "[fd00::10]:8443",
		"fd00::10":                  "[fd00::10]",
		"[FD00:0::10]":              "[fd00::10]",
		"http://origin.internal:81": "origin.internal:81",
		"wss://10.0.0.1/socket":     "10.0.0.1",
		"::ffff:10.0.0.1":           "10.0.0.1",
	}
	for in, want := range good {
		id, err := ParseIdentity(in)
		if err != nil {
			t.Errorf("ParseIdentity(%q): %v", in, err)
			continue
		}
		if id.String() != want {
			t.Errorf("ParseIdentity(%q) = %s, want %s", in, id, want)
		}
	}
	bad := []string{"", " ", "10.0.0.10:", "10.0.0.10:0", "10.0.0.10:70000", "host:port", "[fd00::1", "[fd00::1]x",
		"[nothex::1]", "ftp://origin", "http://", "a..b", "bad host", "{env.X}", "fe80::1%eth0", strings.Repeat("a", 64) + ".b"}
	for _, in := range bad {
		if id, err := ParseIdentity(in); err == nil {
			t.Errorf("ParseIdentity(%q) = %v, want an error", in, id)
		}
	}
}

func TestReplaceForms(t *testing.T) {
	m, p := testMatcher(t)
	cases := map[string]string{
		"http://10.0.0.10:8080/login":                 "https://example.com/login",
		"HTTPS://ORIGIN.INTERNAL/x":                   "https://example.com/x",
		"ws://origin.internal:9000/socket":            "wss://example.com/socket",
		"wss://[fd00::10]:8443/s":                     "wss://example.com/s",
		"src=//app-7.internal/a.js":                   "src=//example.com/a.js",
		"connect to 10.0.0.10 failed":                 "connect to example.com failed",
		"upstream 10.0.0.10:8080 down":                "upstream example.com down",
		"v6 fd00::10 and [fd00::10]:8443.":            "v6 example.com and example.com.",
		"expanded [fd00:0:0:0:0:0:0:10]":              "expanded example.com",
		"110.0.0.10 10.0.0.100 10.0.0.10.5":           "110.0.0.10 10.0.0.100 10.0.0.10.5",
		"myorigin.internal x.origin.internal":         "myorigin.internal x.origin.internal",
		"origin.internals origin.internal-x":          "origin.internals origin.internal-x",
		".origin.internal; origin.internal.":          ".example.com; example.com.",
		"a 10.0.0.10:123456 b":                        "a example.com:123456 b",
		"ftp://origin.internal/":                      "ftp://example.com/",
		"xhttp://origin.internal":                     "xhttp://example.com",
		"\"http://10.0.0.10:8080\",'origin.internal'": "\"https://example.com\",'example.com'",
	}
	for in, want := range cases {
		got, _ := m.ReplaceString(in, p)
		if got != want {
			t.Errorf("ReplaceString(%q)\n got %q\nwant %q", in, got, want)
		}
	}
	if got, n := m.ReplaceString("nothing here", p); got != "nothing here" || n != 0 {
		t.Errorf("no-match case changed: %q %d", got, n)
	}
	pp, _ := ParsePublic("http://localhost:8080")
	if got, _ := m.ReplaceString("ws://10.0.0.10:8080/a http://10.0.0.10/ 10.0.0.10:8080 10.0.0.10", &pp); got != "ws://localhost:8080/a http://localhost:8080/ localhost:8080 localhost" {
		t.Errorf("public with port: %q", got)
	}
}

// TestStreamSplits checks that any split of the input across writes gives
// the same output as the one-shot rewrite, including a match split in two.
func TestStreamSplits(t *testing.T) {
	m, p := testMatcher(t)
	unit := "<a href=\"http://10.0.0.10:8080/x\">origin.internal</a> wss://[fd00::10]:8443/ws //app-7.internal/a "
	in := strings.Repeat(unit, 3000) // about 270 KB: crosses several ChunkSize buffers
	want, n := m.ReplaceString(in, p)
	if n != 4*3000 {
		t.Fatalf("one-shot found %d matches", n)
	}
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 30; round++ {
		var out bytes.Buffer
		s := NewStream(&out, m, p)
		rest := []byte(in)
		for len(rest) > 0 {
			k := 1 + rng.Intn(min(len(rest), []int{3, 50, 7000, 70000}[round%4]))
			if _, err := s.Write(rest[:k]); err != nil {
				t.Fatal(err)
			}
			if rng.Intn(5) == 0 {
				if err := s.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			rest = rest[k:]
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Fatalf("round %d: streamed output differs from one-shot", round)
		}
		if s.Matches() != n || s.Written() != int64(len(want)) {
			t.Fatalf("round %d: matches %d written %d", round, s.Matches(), s.Written())
		}
	}
	// the classic split: "http://10.0.0" | ".10:8080/"
	var out bytes.Buffer
	s := NewStream(&out, m, p)
	s.Write([]byte("go to http://10.0.0"))
	s.Flush()
	s.Write([]byte(".10:8080/login now"))
	s.Close()
	if out.String() != "go to https://example.com/login now" {
		t.Fatalf("split match: %q", out.String())
	}
}

func TestPublicHost(t *testing.T) {
	for _, ok := range [][2]string{{"example.com", ""}, {"localhost", "8443"}, {"10.0.0.1", "80"}, {"fd00::1", ""}, {"a_b.example", ""}} {
		if !ValidPublicHost(ok[0], ok[1]) {
			t.Errorf("%q %q refused", ok[0], ok[1])
		}
	}
	for _, bad := range [][2]string{{"x'+alert(1)+'", ""}, {"a\"b", ""}, {"", ""}, {"example.com", "80a"}, {"fe80::1%eth0", ""}, {"a..b", ""}, {"a/b", ""}} {
		if ValidPublicHost(bad[0], bad[1]) {
			t.Errorf("%q %q accepted", bad[0], bad[1])
		}
	}
	if _, err := ParsePublic("https://ex(ample).com"); err == nil {
		t.Error("public with parentheses accepted")
	}
}

func TestScrubHeaders(t *testing.T) {
	m, p := testMatcher(t)
	strip, err := NewStripSet([]string{"X-Debug"}, []string{"X-Served-By"})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{
		"Server":                      {"Apache/2.4.41 (Ubuntu)"},
		"X-Powered-By":                {"PHP/7.4.3"},
		"Via":                         {"1.1 Caddy"},
		"X-Debug":                     {"x"},
		"X-Served-By":                 {"cache-1"},
		"Location":                    {"http://10.0.0.10:8080/login"},
		"Content-Location":            {"http://origin.internal/a"},
		"Refresh":                     {"5; url=http://10.0.0.10:8080/next"},
		"Link":                        {"<http://origin.internal/style.css>; rel=preload, </b>; rel=next"},
		"Set-Cookie":                  {"sid=1; Domain=.origin.internal; Path=/", "a=b; domain=10.0.0.10; Secure", "c=d; Path=/"},
		"Access-Control-Allow-Origin": {"http://origin.internal:8080"},
		"Content-Security-Policy":     {"default-src 'self' http://10.0.0.10:8080 ws://origin.internal"},
		"Alt-Svc":                     {`h3="origin.internal:443"; ma=86400, h3=":443"; ma=60`},
		"X-Custom":                    {"backend=[fd00::10]:8443"},
	}
	m.ScrubHeaders(h, strip, p)
	want := http.Header{
		"X-Served-By":                 {"cache-1"},
		"Location":                    {"https://example.com/login"},
		"Content-Location":            {"https://example.com/a"},
		"Refresh":                     {"5; url=https://example.com/next"},
		"Link":                        {"<https://example.com/style.css>; rel=preload, </b>; rel=next"},
		"Set-Cookie":                  {"sid=1; Path=/", "a=b; Secure", "c=d; Path=/"},
		"Access-Control-Allow-Origin": {"https://example.com"},
		"Content-Security-Policy":     {"default-src 'self' https://example.com wss://example.com"},
		"Alt-Svc":                     {`h3=":443"; ma=60`},
		"X-Custom":                    {"backend=example.com"},
	}
	for k, v := range want {
		if strings.Join(h[k], "|") != strings.Join(v, "|") {
			t.Errorf("%s = %q, want %q", k, h[k], v)
		}
	}
	if len(h) != len(want) {
		t.Errorf("headers left: %v", h)
	}
	if _, err := NewStripSet([]string{"Bad Header"}, nil); err == nil {
		t.Error("invalid header name accepted")
	}
}

// flushCloser is a compressor as the tests drive it.
type flushCloser interface {
	io.WriteCloser
	Flush() error
}

func newTestCompressor(t testing.TB, coding string, w io.Writer) flushCloser {
	switch coding {
	case "gzip":
		return gzip.NewWriter(w)
	case "deflate":
		fw, _ := flate.NewWriter(w, 5)
		return fw
	case "zstd":
		zw, _ := zstd.NewWriter(w)
		return zw
	}
	t.Fatalf("no compressor for %q", coding)
	return nil
}

func compress(t testing.TB, coding string, data []byte) []byte {
	var b bytes.Buffer
	w := newTestCompressor(t, coding, &b)
	w.Write(data)
	w.Close()
	return b.Bytes()
}

// newTestDecompressor reads a body with the given coding.
func newTestDecompressor(coding string, r io.Reader) (io.Reader, error) {
	switch coding {
	case "gzip":
		return gzip.NewReader(r)
	case "deflate":
		return flate.NewReader(r), nil
	case "zstd":
		return zstd.NewReader(r)
	}
	return r, nil
}

func decompress(t testing.TB, coding string, data []byte) []byte {
	r, err := newTestDecompressor(coding, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// partialDecode decodes what it can of a body that has not ended yet.
func partialDecode(coding string, data []byte) string {
	r, err := newTestDecompressor(coding, bytes.NewReader(data))
	if err != nil {
		return ""
	}
	var out bytes.Buffer
	buf := make([]byte, 512)
	for {
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			return out.String()
		}
	}
}

func TestBodyRewriterCodings(t *testing.T) {
	m, p := testMatcher(t)
	plain := []byte(strings.Repeat("see http://10.0.0.10:8080/ and origin.internal. ", 5000))
	want, _ := m.ReplaceString(string(plain), p)
	for _, coding := range []string{"", "gzip", "deflate", "zstd"} {
		in := plain
		if coding != "" {
			in = compress(t, coding, plain)
		}
		var out bytes.Buffer
		br, err := NewBodyRewriter(&out, coding, m, p)
		if err != nil {
			t.Fatal(err)
		}
		for len(in) > 0 {
			k := min(len(in), 1000)
			if _, err := br.Write(in[:k]); err != nil {
				t.Fatalf("%s: %v", coding, err)
			}
			in = in[k:]
		}
		if err := br.Close(); err != nil {
			t.Fatalf("%s close: %v", coding, err)
		}
		got := out.Bytes()
		if coding != "" {
			got = decompress(t, coding, got)
		}
		if string(got) != want {
			t.Errorf("%s: rewritten body differs", coding)
		}
		if br.Matches() != 10000 {
			t.Errorf("%s: %d matches", coding, br.Matches())
		}
	}
	if _, err := NewBodyRewriter(io.Discard, "br", m, p); err == nil {
		t.Error("br accepted")
	}
	// corrupt gzip: an error, not a hang
	br, _ := NewBodyRewriter(io.Discard, "gzip", m, p)
	br.Write([]byte("not gzip at all"))
	if err := br.Close(); err == nil {
		t.Error("corrupt gzip accepted")
	}
	if got := FilterAcceptEncoding("br;q=1, gzip, zstd;q=0.5, compress"); got != "gzip, zstd;q=0.5" {
		t.Errorf("FilterAcceptEncoding: %q", got)
	}
	if got := FilterAcceptEncoding("br"); got != "identity" {
		t.Errorf("FilterAcceptEncoding(br): %q", got)
	}
}

func TestRequestScrubber(t *testing.T) {
	h := http.Header{"X-Forwarded-For": {"6.6.6.6"}, "X-Real-Ip": {"6.6.6.6"}, "Forwarded": {"for=6.6.6.6"},
		"Cf-Connecting-Ip": {"6.6.6.6"}, "Accept": {"*/*"}, "X-Forwarded-Fort": {"kept"}, "Cookie": {"a=b"}}
	NewRequestScrubber().Scrub(h)
	if len(h) != 3 || h.Get("Accept") == "" || h.Get("X-Forwarded-Fort") == "" || h.Get("Cookie") == "" {
		t.Fatalf("left: %v", h)
	}
	if got := FilterAcceptEncoding("gzip, deflate;q=0.5, zstd, identity"); got != "gzip, deflate;q=0.5, zstd, identity" {
		t.Fatalf("decodable list changed: %q", got)
	}
}
