package wire

import (
	"bytes"
	"net/netip"
	"testing"
)

// BenchmarkParseV2FiveTLVs parses an IPv4 v2 header with ALPN, AUTHORITY,
// UNIQUE_ID, SSL and a verified CRC32C into a fresh Header each time
// (target: under 300 ns, at most 2 allocations).
func BenchmarkParseV2FiveTLVs(b *testing.B) {
	in := fiveTLVHeader(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		var h Header
		if _, err := Parse(in, &h, 4096); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseV2FiveTLVsReused parses into a reused Header, as a listener
// that pools headers would.
func BenchmarkParseV2FiveTLVsReused(b *testing.B) {
	in := fiveTLVHeader(b)
	var h Header
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(in, &h, 4096); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseV1 parses a TCP4 v1 header.
func BenchmarkParseV1(b *testing.B) {
	in := []byte("PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\n")
	b.ReportAllocs()
	for b.Loop() {
		var h Header
		if _, err := Parse(in, &h, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadHeader reads a five-TLV header from a stream, as the listener
// does for each connection.
func BenchmarkReadHeader(b *testing.B) {
	in := append(fiveTLVHeader(b), "GET / HTTP/1.1\r\n"...)
	buf := make([]byte, 0, 256)
	r := bytes.NewReader(in)
	var h Header
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(in)
		if _, err := ReadHeader(r, buf, 4096, &h); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendV2 writes a v2 header with AUTHORITY, UNIQUE_ID and a
// CRC32C, as the reverse_proxy transport does for each upstream connection.
func BenchmarkAppendV2(b *testing.B) {
	h := Header{
		Command:     CommandProxy,
		Source:      netip.MustParseAddrPort("203.0.113.7:51234"),
		Destination: netip.MustParseAddrPort("198.51.100.1:443"),
		TLVs: []TLV{
			{Type: TLVAuthority, Value: []byte("www.example.com")},
			{Type: TLVUniqueID, Value: []byte("0123456789abcdef")},
		},
	}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.AppendV2(buf[:0], true); err != nil {
			b.Fatal(err)
		}
	}
}
