package scrub

import (
	"bytes"
	"net/http"
	"testing"
)

func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{"10.0.0.10:8080", "[fd00::1]:80", "fd00::1", "origin.internal", "https://a.b:1/x", "a..b", "[::", "1.2.3.4:99999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentity(s)
		if err != nil {
			return
		}
		// what was accepted prints back to something that parses the same
		again, err := ParseIdentity(id.String())
		if err != nil || again != id {
			t.Fatalf("%q -> %q -> %v %v", s, id.String(), again, err)
		}
		m := NewMatcherFromIdentities([]Identity{id})
		p := NewPublic("https", "example.com", "")
		if id.Host == "example.com" {
			return
		}
		if out, n := m.ReplaceString("x "+id.String()+" y", &p); n == 0 || len(m.FindAll([]byte(out))) > 0 {
			t.Fatalf("identity %q not replaced in its own spelling: %q", id, out)
		}
	})
}

// FuzzStream checks that the streaming rewriter, for any input and any split
// into two writes, gives the one-shot output.
func FuzzStream(f *testing.F) {
	f.Add([]byte("http://10.0.0.10:8080/a origin.internal"), uint16(12))
	f.Add([]byte("wss://[fd00::10]:8443"), uint16(3))
	f.Add([]byte("//app-7.internal:1"), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		m, p := testMatcher(t)
		want, n := m.ReplaceString(string(data), p)
		k := int(cut)
		if k > len(data) {
			k = len(data)
		}
		var out bytes.Buffer
		s := NewStream(&out, m, p)
		s.Write(data[:k])
		s.Flush()
		s.Write(data[k:])
		s.Close()
		if out.String() != want || s.Matches() != n {
			t.Fatalf("stream %q (cut %d) = %q, one-shot %q", data, k, out.String(), want)
		}
	})
}

// FuzzScrubHeaders checks the header rewriter (Set-Cookie, Alt-Svc, Link,
// Refresh and the generic path) never leaves an identity in a value.
func FuzzScrubHeaders(f *testing.F) {
	f.Add("Set-Cookie", "a=b; Domain=.origin.internal; Path=/")
	f.Add("Alt-Svc", `h3="origin.internal:443"; ma=1, h2=":443"`)
	f.Add("Link", "<http://10.0.0.10:8080/x>; rel=preload")
	f.Add("Refresh", "0; url=//origin.internal/")
	f.Fuzz(func(t *testing.T, name, value string) {
		m, p := testMatcher(t)
		h := http.Header{}
		h[http.CanonicalHeaderKey(name)] = []string{value}
		m.ScrubHeaders(h, StripSet{}, p)
		for _, vals := range h {
			for _, v := range vals {
				if found := m.FindAll([]byte(v)); len(found) > 0 {
					// a replacement can only create a new identity if the
					// public host itself is one; it is not here.
					t.Fatalf("%s: %q still holds an identity after scrubbing %q", name, v, value)
				}
			}
		}
	})
}

// FuzzParsePublic checks that an accepted public origin only ever writes
// host characters into responses.
func FuzzParsePublic(f *testing.F) {
	for _, s := range []string{"https://example.com", "http://localhost:8080", "example.com", "https://[fd00::1]:8443", "https://a'b", "http://x/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePublic(s)
		if err != nil {
			return
		}
		for _, form := range []Form{FormBare, FormSlashes, FormHTTP, FormWS} {
			for _, hasPort := range []bool{false, true} {
				out := p.replacementBytes(Match{Form: form, HasPort: hasPort})
				if i := bytes.IndexAny(out, "\"'<>()+ \\`;,\r\n"); i >= 0 {
					t.Fatalf("public %q writes %q", s, out)
				}
			}
		}
	})
}
