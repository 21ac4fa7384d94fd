package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"testing/iotest"
)

// FuzzParseV1 feeds arbitrary text behind the v1 prefix: Parse must never
// panic, must classify every failure, and what it accepts must write back to
// an equivalent header.
func FuzzParseV1(f *testing.F) {
	for _, s := range []string{
		"PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\n",
		"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
		"PROXY UNKNOWN\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 0 0\r\nGET /",
		"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if !bytes.HasPrefix(in, prefixV1) {
			in = append(append([]byte(nil), prefixV1...), in...)
		}
		checkParse(t, in)
	})
}

// FuzzParseV2 mutates v2 headers: Parse must never panic, must classify
// every failure, and what it accepts must write back to the same header.
func FuzzParseV2(f *testing.F) {
	f.Add(fiveTLVHeader(f))
	for _, h := range []Header{
		{Command: CommandLocal},
		{Command: CommandProxy, Source: netip.MustParseAddrPort("[2001:db8::1]:1"), Destination: netip.MustParseAddrPort("[2001:db8::2]:2")},
		{Command: CommandProxy, SourceUnix: "/a", DestinationUnix: "/b"},
	} {
		for _, crc := range []bool{false, true} {
			b, _ := h.AppendV2(nil, crc)
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if !bytes.HasPrefix(in, signatureV2) {
			in = append(append([]byte(nil), signatureV2...), in...)
		}
		checkParse(t, in)
	})
}

func checkParse(t *testing.T, in []byte) {
	var h Header
	n, err := Parse(in, &h, 0)
	if err != nil {
		if !errors.Is(err, ErrIncomplete) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) &&
			!errors.Is(err, ErrBadCRC) && !errors.Is(err, ErrNotProxy) {
			t.Fatalf("unclassified error %v", err)
		}
		return
	}
	if n <= 0 || n > len(in) {
		t.Fatalf("consumed %d of %d bytes", n, len(in))
	}
	// A reader that delivers one byte at a time must agree with Parse.
	var viaReader Header
	rest, err := ReadHeader(iotest.OneByteReader(bytes.NewReader(in)), nil, 0, &viaReader)
	if err != nil || viaReader.Source != h.Source || viaReader.Command != h.Command || len(viaReader.TLVs) != len(h.TLVs) {
		t.Fatalf("ReadHeader disagrees: %v %+v vs %+v", err, viaReader, h)
	}
	if len(rest) > len(in)-n {
		t.Fatalf("ReadHeader returned %d bytes of rest, only %d follow", len(rest), len(in)-n)
	}
	if h.Version == 1 {
		if _, err := h.AppendV1(nil); err != nil {
			t.Fatalf("accepted v1 header does not write back: %v", err)
		}
		return
	}
	out, err := h.AppendV2(nil, h.HasCRC())
	if err != nil {
		t.Fatalf("accepted v2 header does not write back: %v", err)
	}
	var back Header
	if _, err := Parse(out, &back, 0); err != nil {
		t.Fatalf("written header does not parse: %v", err)
	}
	if h.Command == CommandProxy && (h.Family == FamilyInet || h.Family == FamilyInet6) &&
		(back.Source != h.Source || back.Destination != h.Destination) {
		t.Fatalf("addresses changed: %v %v -> %v %v", h.Source, h.Destination, back.Source, back.Destination)
	}
}
