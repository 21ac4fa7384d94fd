package scrub

import (
	"net/url"
	"testing"
)

// TestEvasions: spellings of an origin that a browser or an HTTP client
// resolves to it are rewritten, into valid URLs.
func TestEvasions(t *testing.T) {
	m, err := NewMatcher([]string{"10.0.0.10:8080", "origin.internal", "fd00::10"})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := ParsePublic("https://example.com")
	p := &pub
	for _, c := range []struct{ in, want string }{
		// percent-encoded and double-encoded URLs (query parameters)
		{"/login?next=http%3A%2F%2F10.0.0.10%3A8080%2Fadmin", "/login?next=https%3A%2F%2Fexample.com%2Fadmin"},
		{"/login?next=http%253A%252F%252F10.0.0.10%253A8080%252Fadmin", "/login?next=https%253A%252F%252Fexample.com%252Fadmin"},
		{"/r?u=%2F%2Forigin.internal%2Fx", "/r?u=%2F%2Fexample.com%2Fx"},
		{"/r?u=origin.internal%3A8443", "/r?u=example.com"},
		// IPv4 written as one number, in octal, in hex
		{"http://167772170/x", "https://example.com/x"},
		{"http://012.0.0.012:8080/x", "https://example.com/x"},
		{"http://0x0a00000a/x", "https://example.com/x"},
		{"http://0xa.0.0.0xa/x", "https://example.com/x"},
		{"//10.10/x", "//example.com/x"}, // 10.10 is 10.0.0.10
		// IPv4-mapped IPv6 and non-canonical IPv6
		{"http://[::ffff:a00:a]:8080/x", "https://example.com/x"},
		{"http://[::ffff:10.0.0.10]/x", "https://example.com/x"},
		{"http://[fd00:0::10]/x", "https://example.com/x"},
		{"http://[FD00:0000:0:0::0010]:8443/x", "https://example.com/x"},
		// a trailing-dot host
		{"http://origin.internal./x", "https://example.com/x"},
		{"http://origin.internal.:8443/x", "https://example.com/x"},
		// prose keeps its full stop
		{"served by origin.internal.", "served by example.com."},
		// not identities
		{"167772170 bytes", "167772170 bytes"},
		{"http://167772171/x", "http://167772171/x"},
		{"[::ffff:a00:b]", "[::ffff:a00:b]"},
		{"http://origin.internal.example/x", "http://origin.internal.example/x"},
		{"%2Fsub.origin.internal", "%2Fsub.origin.internal"},
	} {
		got, _ := m.ReplaceString(c.in, p)
		if got != c.want {
			t.Errorf("%q: got %q, want %q", c.in, got, c.want)
		}
		// the stream finds the same, however the input is cut
		for cut := 1; cut < len(c.in); cut++ {
			var out stringsBuilder
			s := NewStream(&out, m, p)
			s.Write([]byte(c.in[:cut]))
			s.Write([]byte(c.in[cut:]))
			s.Close()
			if out.String() != c.want {
				t.Errorf("%q cut at %d: stream gave %q", c.in, cut, out.String())
				break
			}
		}
		if got == c.in {
			continue
		}
		if u, err := url.Parse(got); err != nil {
			t.Errorf("%q: rewritten into an invalid URL %q: %v", c.in, got, err)
		} else if u.Host != "" && u.Port() == "" && u.Host[len(u.Host)-1] == '.' {
			t.Errorf("%q: host %q keeps a trailing dot", c.in, u.Host)
		}
	}
}

type stringsBuilder struct{ b []byte }

func (s *stringsBuilder) Write(p []byte) (int, error) { s.b = append(s.b, p...); return len(p), nil }
func (s *stringsBuilder) String() string              { return string(s.b) }
