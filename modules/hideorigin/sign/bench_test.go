package sign

import (
	"net/netip"
	"testing"
	"time"
)

func BenchmarkSign(b *testing.B) {
	k, _ := NewKey("bench-key-0123456789")
	s := Signed{Method: "GET", Host: "example.com", URI: "/a?b=c", ClientIP: netip.MustParseAddr("203.0.113.9"), Time: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		s.Nonce = [nonceLen]byte{}
		_ = k.Sign(s)
	}
}

func BenchmarkVerify(b *testing.B) {
	k, _ := NewKey("bench-key-0123456789")
	v, _ := NewVerifier([]Key{k}, time.Minute, NewReplayCache(2*time.Minute, 1<<30))
	s := Signed{Method: "GET", Host: "example.com", URI: "/a?b=c", ClientIP: netip.MustParseAddr("203.0.113.9"), Time: time.Now()}
	headers := make([]string, 4096)
	for i := range headers {
		headers[i] = k.Sign(s)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := v.Verify(headers[i%len(headers)], "GET", "example.com", "/a?b=c"); err != nil && i < len(headers) {
			b.Fatal(err)
		}
		i++
	}
}
