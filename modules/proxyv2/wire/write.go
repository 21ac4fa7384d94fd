package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// ErrUnwritable is wrapped by the errors of AppendV1 and AppendV2 when the
// header cannot be expressed on the wire.
var ErrUnwritable = errors.New("cannot write PROXY header")

// AppendV2 appends h as a v2 header to dst. The family comes from the
// addresses: IPv4 when both are IPv4, IPv6 otherwise (an IPv4 address is
// then written in its IPv4-mapped form, and IPv4-mapped addresses stay
// IPv6), UNIX when the paths are set, UNSPEC
// when there are none. CRC32C and NOOP TLVs in h.TLVs are skipped; with crc a
// CRC32C TLV is appended last and filled in.
func (h *Header) AppendV2(dst []byte, crc bool) ([]byte, error) {
	family, transport := h.wireFamily()
	start := len(dst)
	dst = append(dst, signatureV2...)
	dst = append(dst, 0x20|byte(h.Command&1), byte(family)<<4|byte(transport), 0, 0)
	switch family {
	case FamilyInet:
		s, d := h.Source.Addr().As4(), h.Destination.Addr().As4()
		dst = append(dst, s[:]...)
		dst = append(dst, d[:]...)
		dst = binary.BigEndian.AppendUint16(dst, h.Source.Port())
		dst = binary.BigEndian.AppendUint16(dst, h.Destination.Port())
	case FamilyInet6:
		s, d := h.Source.Addr().As16(), h.Destination.Addr().As16()
		dst = append(dst, s[:]...)
		dst = append(dst, d[:]...)
		dst = binary.BigEndian.AppendUint16(dst, h.Source.Port())
		dst = binary.BigEndian.AppendUint16(dst, h.Destination.Port())
	case FamilyUnix:
		if len(h.SourceUnix) > unixPathLen || len(h.DestinationUnix) > unixPathLen {
			return dst[:start], fmt.Errorf("%w: UNIX socket path longer than %d bytes", ErrUnwritable, unixPathLen)
		}
		dst = appendPadded(dst, h.SourceUnix)
		dst = appendPadded(dst, h.DestinationUnix)
	}
	for _, t := range h.TLVs {
		if t.Type == TLVCRC32C || t.Type == TLVNoop {
			continue
		}
		if len(t.Value) > 0xffff {
			return dst[:start], fmt.Errorf("%w: TLV %#x of %d bytes", ErrUnwritable, t.Type, len(t.Value))
		}
		dst = append(dst, t.Type)
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(t.Value)))
		dst = append(dst, t.Value...)
	}
	crcAt := -1
	if crc {
		dst = append(dst, TLVCRC32C, 0, 4, 0, 0, 0, 0)
		crcAt = len(dst) - 4 - start
	}
	length := len(dst) - start - v2HeaderLen
	if length > 0xffff {
		return dst[:start], fmt.Errorf("%w: header of %d bytes", ErrUnwritable, length+v2HeaderLen)
	}
	header := dst[start:]
	binary.BigEndian.PutUint16(header[14:16], uint16(length))
	if crcAt >= 0 {
		binary.BigEndian.PutUint32(header[crcAt:], checksum(header, crcAt))
	}
	return dst, nil
}

// wireFamily derives the family and transport written for h.
func (h *Header) wireFamily() (Family, Transport) {
	transport := h.Transport
	if transport == TransportUnspec {
		transport = TransportStream
	}
	switch {
	case h.SourceUnix != "" || h.DestinationUnix != "":
		return FamilyUnix, transport
	case h.Source.IsValid() && h.Destination.IsValid():
		if h.Source.Addr().Is4() && h.Destination.Addr().Is4() {
			return FamilyInet, transport
		}
		return FamilyInet6, transport
	}
	return FamilyUnspec, TransportUnspec
}

// appendPadded appends a unix path padded with NULs to its v2 field size.
func appendPadded(dst []byte, path string) []byte {
	dst = append(dst, path...)
	return append(dst, make([]byte, unixPathLen-len(path))...)
}

// AppendV1 appends h as a v1 header to dst: TCP4 when both addresses are
// IPv4, TCP6 when both are valid otherwise, UNKNOWN when they are not.
func (h *Header) AppendV1(dst []byte) ([]byte, error) {
	family, _ := h.wireFamily()
	switch family {
	case FamilyUnspec:
		return append(dst, "PROXY UNKNOWN\r\n"...), nil
	case FamilyUnix:
		return dst, fmt.Errorf("%w: v1 cannot carry UNIX addresses", ErrUnwritable)
	}
	src, dstAddr := h.Source.Addr(), h.Destination.Addr()
	if family == FamilyInet {
		dst = append(dst, "PROXY TCP4 "...)
	} else {
		dst = append(dst, "PROXY TCP6 "...)
		if src.Is4() {
			src = netip.AddrFrom16(src.As16())
		}
		if dstAddr.Is4() {
			dstAddr = netip.AddrFrom16(dstAddr.As16())
		}
	}
	dst = src.WithZone("").AppendTo(dst)
	dst = append(dst, ' ')
	dst = dstAddr.WithZone("").AppendTo(dst)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(h.Source.Port()), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(h.Destination.Port()), 10)
	return append(dst, '\r', '\n'), nil
}

// EncodeSSL returns the value of an SSL TLV describing s.
func EncodeSSL(s SSL) []byte {
	b := make([]byte, 5, 5+len(s.Version)+len(s.CN)+len(s.Cipher)+len(s.SigAlg)+len(s.KeyAlg)+15)
	b[0] = s.Client
	binary.BigEndian.PutUint32(b[1:5], s.Verify)
	for _, sub := range [...]struct {
		typ uint8
		val string
	}{{SSLSubVersion, s.Version}, {SSLSubCN, s.CN}, {SSLSubCipher, s.Cipher}, {SSLSubSigAlg, s.SigAlg}, {SSLSubKeyAlg, s.KeyAlg}} {
		if sub.val == "" {
			continue
		}
		b = append(b, sub.typ)
		b = binary.BigEndian.AppendUint16(b, uint16(min(len(sub.val), 0xffff)))
		b = append(b, sub.val[:min(len(sub.val), 0xffff)]...)
	}
	return b
}
