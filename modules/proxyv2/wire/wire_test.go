package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"
)

func mustAppendV2(t testing.TB, h *Header, crc bool) []byte {
	t.Helper()
	b, err := h.AppendV2(nil, crc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fiveTLVHeader is the header of the parsing benchmark: IPv4 with ALPN,
// AUTHORITY, UNIQUE_ID, SSL and CRC32C.
func fiveTLVHeader(t testing.TB) []byte {
	h := Header{
		Command:     CommandProxy,
		Source:      netip.MustParseAddrPort("203.0.113.7:51234"),
		Destination: netip.MustParseAddrPort("198.51.100.1:443"),
		TLVs: []TLV{
			{Type: TLVALPN, Value: []byte("h2")},
			{Type: TLVAuthority, Value: []byte("www.example.com")},
			{Type: TLVUniqueID, Value: []byte("0123456789abcdef")},
			{Type: TLVSSL, Value: EncodeSSL(SSL{Client: SSLClientSSL, Version: "TLSv1.3", Cipher: "TLS_AES_128_GCM_SHA256"})},
		},
	}
	return mustAppendV2(t, &h, true)
}

func TestV2RoundTrip(t *testing.T) {
	cases := []Header{
		{Command: CommandProxy, Source: netip.MustParseAddrPort("192.0.2.1:1234"), Destination: netip.MustParseAddrPort("192.0.2.2:443")},
		{Command: CommandProxy, Source: netip.MustParseAddrPort("[2001:db8::1]:1234"), Destination: netip.MustParseAddrPort("[2001:db8::2]:443")},
		{Command: CommandProxy, Transport: TransportDatagram, Source: netip.MustParseAddrPort("192.0.2.1:53"), Destination: netip.MustParseAddrPort("192.0.2.2:53")},
		{Command: CommandProxy, SourceUnix: "/run/client.sock", DestinationUnix: "/run/server.sock"},
		{Command: CommandLocal},
		{Command: CommandProxy, TLVs: []TLV{{Type: TLVAuthority, Value: []byte("example.com")}}},
		{Command: CommandProxy, Source: netip.MustParseAddrPort("192.0.2.1:1"), Destination: netip.MustParseAddrPort("192.0.2.2:2"),
			TLVs: []TLV{{Type: 0xE5, Value: []byte{0, 1, 2}}, {Type: TLVUniqueID, Value: bytes.Repeat([]byte{'u'}, 128)}}},
	}
	for _, crc := range []bool{false, true} {
		for i, want := range cases {
			b := mustAppendV2(t, &want, crc)
			var got Header
			n, err := Parse(b, &got, 0)
			if err != nil {
				t.Fatalf("case %d crc=%v: %v", i, crc, err)
			}
			if n != len(b) {
				t.Errorf("case %d: parsed %d of %d bytes", i, n, len(b))
			}
			if got.Version != 2 || got.Command != want.Command || got.Source != want.Source || got.Destination != want.Destination ||
				got.SourceUnix != want.SourceUnix || got.DestinationUnix != want.DestinationUnix {
				t.Errorf("case %d: got %+v, want %+v", i, got, want)
			}
			for _, tlv := range want.TLVs {
				if v, ok := got.TLV(tlv.Type); !ok || !bytes.Equal(v, tlv.Value) {
					t.Errorf("case %d: TLV %#x = %q, want %q", i, tlv.Type, v, tlv.Value)
				}
			}
			if got.HasCRC() != crc {
				t.Errorf("case %d: HasCRC = %v, want %v", i, got.HasCRC(), crc)
			}
		}
	}
}

func TestV2MixedFamiliesBecomeIPv6(t *testing.T) {
	h := Header{Command: CommandProxy, Source: netip.MustParseAddrPort("192.0.2.1:1"), Destination: netip.MustParseAddrPort("[2001:db8::2]:2")}
	var got Header
	if _, err := Parse(mustAppendV2(t, &h, false), &got, 0); err != nil {
		t.Fatal(err)
	}
	if got.Family != FamilyInet6 || got.Source.Addr().Unmap() != h.Source.Addr() {
		t.Errorf("got family %v source %v", got.Family, got.Source)
	}
}

func TestV1(t *testing.T) {
	good := []struct {
		in       string
		src, dst string
		family   Family
	}{
		{"PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\n", "192.0.2.1:56324", "192.0.2.2:443", FamilyInet},
		{"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n", "[2001:db8::1]:1", "[2001:db8::2]:65535", FamilyInet6},
		{"PROXY UNKNOWN\r\n", "", "", FamilyUnspec},
		{"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", "", "", FamilyUnspec},
	}
	for _, c := range good {
		var h Header
		n, err := Parse([]byte(c.in+"GET / HTTP/1.1\r\n"), &h, 0)
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		if n != len(c.in) || h.Version != 1 || h.Family != c.family {
			t.Errorf("%q: n=%d version=%d family=%d", c.in, n, h.Version, h.Family)
		}
		if c.src != "" && (h.Source.String() != c.src || h.Destination.String() != c.dst) {
			t.Errorf("%q: src %v dst %v", c.in, h.Source, h.Destination)
		}
		out, err := h.AppendV1(nil)
		if err != nil || (c.src != "" && string(out) != c.in) {
			t.Errorf("%q: AppendV1 = %q, %v", c.in, out, err)
		}
	}
	bad := []struct{ in, why string }{
		{"PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\n", "CRLF"},
		{"PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n", "TCP5"},
		{"PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n", "does not match"},
		{"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n", "does not match"},
		{"PROXY TCP4 192.0.2.1 192.0.2.2 1 65536\r\n", "65536"},
		{"PROXY TCP4 192.0.2.1 192.0.2.2 01 2\r\n", "01"},
		{"PROXY TCP4 192.0.2.1 192.0.2.2 -1 2\r\n", "-1"},
		{"PROXY TCP4 192.0.2.1  192.0.2.2 1 2\r\n", "four"},
		{"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n", "four"},
		{"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n", "four"},
		{"PROXY TCP4 192.0.2.001 192.0.2.2 1 2\r\n", "192.0.2.001"},
		{"PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n", "fe80::1%eth0"},
	}
	for _, c := range bad {
		var h Header
		_, err := Parse([]byte(c.in), &h, 0)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%q: error %v, want malformed mentioning %q", c.in, err, c.why)
		}
	}
	var h Header
	long := "PROXY TCP6 " + strings.Repeat("a", 120)
	if _, err := Parse([]byte(long), &h, 0); !errors.Is(err, ErrTooLarge) {
		t.Errorf("107+ byte v1 header: %v", err)
	}
	if _, err := Parse([]byte("PROXY TCP4 192.0.2.1"), &h, 0); !errors.Is(err, ErrIncomplete) {
		t.Errorf("partial v1 header: %v", err)
	}
}

func TestDetect(t *testing.T) {
	cases := []struct {
		in      string
		version int
		err     error
	}{
		{"", 0, ErrIncomplete},
		{"PRO", 0, ErrIncomplete},
		{"\r\n\r\n\x00", 0, ErrIncomplete},
		{"PROXY ", 1, nil},
		{"\r\n\r\n\x00\r\nQUIT\n", 2, nil},
		{"GET / HTTP/1.1\r\n", 0, nil},
		{"PROPFIND /", 0, nil},
		{"\x16\x03\x01\x02\x00", 0, nil},
	}
	for _, c := range cases {
		v, err := Detect([]byte(c.in))
		if v != c.version || !errors.Is(err, c.err) {
			t.Errorf("Detect(%q) = %d, %v; want %d, %v", c.in, v, err, c.version, c.err)
		}
	}
}

func TestV2Malformed(t *testing.T) {
	good := fiveTLVHeader(t)
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		name string
		in   []byte
		err  error
	}{
		{"version 3", mutate(func(b []byte) []byte { b[12] = 0x31; return b }), ErrMalformed},
		{"command 2", mutate(func(b []byte) []byte { b[12] = 0x22; return b }), ErrMalformed},
		{"family 4", mutate(func(b []byte) []byte { b[13] = 0x41; return b }), ErrMalformed},
		{"transport 3", mutate(func(b []byte) []byte { b[13] = 0x13; return b }), ErrMalformed},
		{"length too short for family", mutate(func(b []byte) []byte { binary.BigEndian.PutUint16(b[14:], 4); return b[:20] }), ErrMalformed},
		{"TLV overruns", mutate(func(b []byte) []byte { b[28+2] = 0xff; return b }), ErrMalformed},
		{"wrong CRC", mutate(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrBadCRC},
		{"payload changed under CRC", mutate(func(b []byte) []byte { b[16] ^= 1; return b }), ErrBadCRC},
		{"zeroed CRC", mutate(func(b []byte) []byte { copy(b[len(b)-4:], []byte{0, 0, 0, 0}); return b }), ErrBadCRC},
		{"truncated", good[:len(good)-1], ErrIncomplete},
	}
	for _, c := range cases {
		var h Header
		if _, err := Parse(c.in, &h, 0); !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", c.name, err, c.err)
		}
	}
	var h Header
	if _, err := Parse(good, &h, 20); !errors.Is(err, ErrTooLarge) {
		t.Errorf("limit: %v", err)
	}
	long := Header{TLVs: []TLV{{Type: TLVUniqueID, Value: make([]byte, 129)}}}
	if _, err := Parse(mustAppendV2(t, &long, false), &h, 0); !errors.Is(err, ErrMalformed) {
		t.Errorf("UNIQUE_ID of 129 bytes: %v", err)
	}
	twoCRC := Header{TLVs: []TLV{{Type: TLVALPN, Value: []byte("h2")}}}
	b := mustAppendV2(t, &twoCRC, true)
	b = append(b, TLVCRC32C, 0, 4, 0, 0, 0, 0)
	binary.BigEndian.PutUint16(b[14:], uint16(len(b)-16))
	if _, err := Parse(b, &h, 0); !errors.Is(err, ErrMalformed) {
		t.Errorf("two CRC TLVs: %v", err)
	}
}

// bitwiseCRC32C is an independent, table-free CRC32-Castagnoli (reflected
// polynomial 0x82F63B78) used to check the package's checksum.
func bitwiseCRC32C(b []byte) uint32 {
	crc := ^uint32(0)
	for _, c := range b {
		crc ^= uint32(c)
		for range 8 {
			if crc&1 == 1 {
				crc = crc>>1 ^ 0x82F63B78
			} else {
				crc >>= 1
			}
		}
	}
	return ^crc
}

func TestCRCMatchesIndependentImplementation(t *testing.T) {
	if got := bitwiseCRC32C([]byte("123456789")); got != 0xE3069283 {
		t.Fatalf("reference CRC32C of the check string is %08x, want e3069283", got)
	}
	b := fiveTLVHeader(t)
	stored := binary.BigEndian.Uint32(b[len(b)-4:])
	zeroed := append([]byte(nil), b...)
	copy(zeroed[len(zeroed)-4:], []byte{0, 0, 0, 0})
	if want := bitwiseCRC32C(zeroed); stored != want {
		t.Errorf("written CRC32C %08x, independent computation %08x", stored, want)
	}
}

func TestVendorTLVs(t *testing.T) {
	gcp := make([]byte, 8)
	binary.BigEndian.PutUint64(gcp, 1234567890123)
	azure := []byte{AzureSubPrivateEndpointID, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(azure[1:], 4242)
	h := Header{TLVs: []TLV{
		{Type: TLVAWS, Value: append([]byte{AWSSubVPCEndpointID}, "vpce-08d2bf15fac5001c9"...)},
		{Type: TLVAzure, Value: azure},
		{Type: TLVGCP, Value: gcp},
		{Type: TLVAlibaba, Value: append([]byte{AlibabaSubVPCID}, "vpc-abc"...)},
		{Type: TLVAlibaba, Value: append([]byte{AlibabaSubEndpointID}, "ep-123"...)},
		{Type: TLVSSL, Value: EncodeSSL(SSL{Client: SSLClientSSL | SSLClientCertConn, Verify: 0, Version: "TLSv1.3", CN: "client.example",
			Cipher: "TLS_AES_256_GCM_SHA384", SigAlg: "SHA256", KeyAlg: "RSA2048"})},
	}}
	var got Header
	if _, err := Parse(mustAppendV2(t, &h, false), &got, 0); err != nil {
		t.Fatal(err)
	}
	if v, _ := got.SubTLV(TLVAWS, AWSSubVPCEndpointID); string(v) != "vpce-08d2bf15fac5001c9" {
		t.Errorf("aws %q", v)
	}
	if v, _ := got.AzureLinkID(); v != "4242" {
		t.Errorf("azure %q", v)
	}
	if v, _ := got.GCPConnectionID(); v != "1234567890123" {
		t.Errorf("gcp %q", v)
	}
	if v, _ := got.SubTLV(TLVAlibaba, AlibabaSubEndpointID); string(v) != "ep-123" {
		t.Errorf("alibaba endpoint %q", v)
	}
	s, ok := got.SSL()
	if !ok || s.CN != "client.example" || s.Version != "TLSv1.3" || s.KeyAlg != "RSA2048" || s.SigAlg != "SHA256" || !s.Verified() {
		t.Errorf("ssl %+v %v", s, ok)
	}
	if Printable([]byte("abc")) != "abc" || Printable([]byte{0, 1}) != "0x0001" {
		t.Error("Printable")
	}
}

func TestReadHeaderKeepsFollowingBytes(t *testing.T) {
	hdr := fiveTLVHeader(t)
	payload := []byte("\x16\x03\x01 a TLS ClientHello follows in the same segment")
	stream := append(append([]byte(nil), hdr...), payload...)
	readers := map[string]func() io.Reader{
		"one write":   func() io.Reader { return bytes.NewReader(stream) },
		"byte a read": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"half reads":  func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
	}
	for name, mk := range readers {
		r := mk()
		var h Header
		rest, err := ReadHeader(r, nil, 4096, &h)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		tail, _ := io.ReadAll(r)
		if got := append(append([]byte(nil), rest...), tail...); !bytes.Equal(got, payload) {
			t.Errorf("%s: after the header got %q", name, got)
		}
		if a, _ := h.TLV(TLVAuthority); string(a) != "www.example.com" {
			t.Errorf("%s: authority %q", name, a)
		}
	}
}

func TestReadHeaderErrors(t *testing.T) {
	var h Header
	if _, err := ReadHeader(bytes.NewReader(nil), nil, 0, &h); err != io.EOF {
		t.Errorf("empty: %v", err)
	}
	hdr := fiveTLVHeader(t)
	if _, err := ReadHeader(bytes.NewReader(hdr[:30]), nil, 0, &h); !errors.Is(err, ErrTruncated) {
		t.Errorf("truncated: %v", err)
	}
	rest, err := ReadHeader(bytes.NewReader([]byte("GET / HTTP/1.1\r\n")), nil, 0, &h)
	if !errors.Is(err, ErrNotProxy) || !strings.HasPrefix("GET / HTTP/1.1\r\n", string(rest)) || len(rest) == 0 {
		t.Errorf("plain: %v %q", err, rest)
	}
	big := Header{TLVs: []TLV{{Type: TLVNoop + 0xE0, Value: make([]byte, 5000)}}}
	if _, err := ReadHeader(bytes.NewReader(mustAppendV2(t, &big, false)), nil, 4096, &h); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized: %v", err)
	}
}

func TestAppendErrors(t *testing.T) {
	h := Header{SourceUnix: strings.Repeat("p", 200)}
	if _, err := h.AppendV2(nil, false); !errors.Is(err, ErrUnwritable) {
		t.Errorf("long unix path: %v", err)
	}
	if _, err := h.AppendV1(nil); !errors.Is(err, ErrUnwritable) {
		t.Errorf("v1 unix: %v", err)
	}
	h = Header{TLVs: []TLV{{Type: 0xE0, Value: make([]byte, 70000)}}}
	if _, err := h.AppendV2(nil, false); !errors.Is(err, ErrUnwritable) {
		t.Errorf("huge TLV: %v", err)
	}
}
