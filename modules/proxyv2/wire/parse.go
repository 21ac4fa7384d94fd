package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
)

// signatureV2 opens every v2 header.
var signatureV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")

// prefixV1 opens every v1 header.
var prefixV1 = []byte("PROXY ")

// zeroChecksum stands in for the checksum field while it is computed.
var zeroChecksum [4]byte

// castagnoli is the CRC32C table used by the CRC32C TLV.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors returned by Parse and ReadHeader; the returned error wraps one of
// them, so callers classify with errors.Is.
var (
	// ErrIncomplete means the bytes are a valid beginning of a header.
	ErrIncomplete = errors.New("incomplete PROXY header")
	// ErrNotProxy means the bytes do not begin with a PROXY header.
	ErrNotProxy = errors.New("no PROXY header")
	// ErrMalformed means the header breaks the specification.
	ErrMalformed = errors.New("malformed PROXY header")
	// ErrTooLarge means the header is longer than the limit.
	ErrTooLarge = errors.New("PROXY header too large")
	// ErrBadCRC means the CRC32C TLV does not match the header.
	ErrBadCRC = errors.New("PROXY header CRC32C mismatch")
	// ErrTruncated means the connection ended inside a header.
	ErrTruncated = errors.New("connection closed inside the PROXY header")
)

// Detect reports which version b begins with: 1, 2, or 0 when b is not a
// PROXY header. It returns ErrIncomplete when b is too short to tell.
func Detect(b []byte) (int, error) {
	if v, ok := matchPrefix(b, signatureV2); ok {
		return 2 * v, nil
	} else if v == -1 {
		return 0, ErrIncomplete
	}
	if v, ok := matchPrefix(b, prefixV1); ok {
		return v, nil
	} else if v == -1 {
		return 0, ErrIncomplete
	}
	return 0, nil
}

// matchPrefix returns (1, true) when b starts with p, (-1, false) when b is
// a proper prefix of p, and (0, false) otherwise.
func matchPrefix(b, p []byte) (int, bool) {
	if len(b) >= len(p) {
		if bytes.Equal(b[:len(p)], p) {
			return 1, true
		}
		return 0, false
	}
	if bytes.Equal(b, p[:len(b)]) {
		return -1, false
	}
	return 0, false
}

// Parse parses the header at the start of b into h, reusing h.TLVs, and
// returns its length. maxLen limits the header length (0: no limit beyond the
// protocol's own). It returns ErrIncomplete when b holds only the beginning of
// a header and ErrNotProxy when b does not begin with one.
func Parse(b []byte, h *Header, maxLen int) (int, error) {
	version, err := Detect(b)
	if err != nil {
		return 0, err
	}
	switch version {
	case 1:
		return parseV1(b, h, maxLen)
	case 2:
		return parseV2(b, h, maxLen)
	}
	return 0, ErrNotProxy
}

// parseV1 parses "PROXY TCP4 src dst sport dport\r\n" and its TCP6 and
// UNKNOWN forms.
func parseV1(b []byte, h *Header, maxLen int) (int, error) {
	limit := MaxV1Length
	if maxLen > 0 && maxLen < limit {
		limit = maxLen
	}
	end := bytes.IndexByte(b[:min(len(b), limit)], '\n')
	if end < 0 {
		if len(b) >= limit {
			return 0, fmt.Errorf("%w: v1 header longer than %d bytes", ErrTooLarge, limit)
		}
		return 0, ErrIncomplete
	}
	if end == 0 || b[end-1] != '\r' {
		return 0, fmt.Errorf("%w: v1 header does not end with CRLF", ErrMalformed)
	}
	line := b[len(prefixV1) : end-1]
	*h = Header{Version: 1, Command: CommandProxy, TLVs: h.TLVs[:0]}
	proto, rest, _ := bytes.Cut(line, []byte{' '})
	switch string(proto) {
	case "UNKNOWN":
		h.Family = FamilyUnspec
		return end + 1, nil
	case "TCP4":
		h.Family, h.Transport = FamilyInet, TransportStream
	case "TCP6":
		h.Family, h.Transport = FamilyInet6, TransportStream
	default:
		return 0, fmt.Errorf("%w: v1 protocol %q is not TCP4, TCP6 or UNKNOWN", ErrMalformed, proto)
	}
	var fields [4][]byte
	for i := range fields {
		var field []byte
		var found bool
		field, rest, found = bytes.Cut(rest, []byte{' '})
		if len(field) == 0 || (i < 3) != found {
			return 0, fmt.Errorf("%w: v1 header needs exactly four single-space separated fields after the protocol", ErrMalformed)
		}
		fields[i] = field
	}
	src, err := parseV1Addr(fields[0], h.Family)
	if err != nil {
		return 0, err
	}
	dst, err := parseV1Addr(fields[1], h.Family)
	if err != nil {
		return 0, err
	}
	sport, err := parseV1Port(fields[2])
	if err != nil {
		return 0, err
	}
	dport, err := parseV1Port(fields[3])
	if err != nil {
		return 0, err
	}
	h.Source = netip.AddrPortFrom(src, sport)
	h.Destination = netip.AddrPortFrom(dst, dport)
	return end + 1, nil
}

// parseV1Addr parses a v1 address, which must be of the line's family.
func parseV1Addr(b []byte, family Family) (netip.Addr, error) {
	addr, err := netip.ParseAddr(string(b))
	if err != nil || addr.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%w: v1 address %q is not a valid IP", ErrMalformed, b)
	}
	if (family == FamilyInet) != addr.Is4() {
		return netip.Addr{}, fmt.Errorf("%w: v1 address %q does not match the protocol", ErrMalformed, b)
	}
	return addr, nil
}

// parseV1Port parses a v1 port: a decimal without leading zeros.
func parseV1Port(b []byte) (uint16, error) {
	if len(b) > 5 || (len(b) > 1 && b[0] == '0') {
		return 0, fmt.Errorf("%w: v1 port %q is not a decimal in 0-65535", ErrMalformed, b)
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: v1 port %q is not a decimal in 0-65535", ErrMalformed, b)
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, fmt.Errorf("%w: v1 port %q is not a decimal in 0-65535", ErrMalformed, b)
	}
	return uint16(n), nil
}

// v2HeaderLen is the fixed part of a v2 header: signature, version and
// command, family, length.
const v2HeaderLen = 16

// Address block lengths of the v2 families.
const (
	v2AddrLenInet  = 12
	v2AddrLenInet6 = 36
	v2AddrLenUnix  = 216
	unixPathLen    = 108
)

// parseV2 parses the v2 header at the start of b into h and returns its
// length, or ErrIncomplete when b holds only part of it.
func parseV2(b []byte, h *Header, maxLen int) (int, error) {
	if len(b) < v2HeaderLen {
		return 0, ErrIncomplete
	}
	if b[12]>>4 != 2 {
		return 0, fmt.Errorf("%w: v2 version nibble is %d", ErrMalformed, b[12]>>4)
	}
	cmd := Command(b[12] & 0x0f)
	if cmd > CommandProxy {
		return 0, fmt.Errorf("%w: v2 command %#x is neither LOCAL nor PROXY", ErrMalformed, uint8(cmd))
	}
	family, transport := Family(b[13]>>4), Transport(b[13]&0x0f)
	if family > FamilyUnix || transport > TransportDatagram {
		return 0, fmt.Errorf("%w: v2 address family byte %#x is unknown", ErrMalformed, b[13])
	}
	total := v2HeaderLen + int(binary.BigEndian.Uint16(b[14:16]))
	if maxLen > 0 && total > maxLen {
		return 0, fmt.Errorf("%w: v2 header of %d bytes exceeds the limit of %d", ErrTooLarge, total, maxLen)
	}
	if len(b) < total {
		return 0, ErrIncomplete
	}
	*h = Header{Version: 2, Command: cmd, Family: family, Transport: transport, TLVs: h.TLVs[:0]}
	body := b[v2HeaderLen:total]
	var addrLen int
	switch family {
	case FamilyInet:
		addrLen = v2AddrLenInet
	case FamilyInet6:
		addrLen = v2AddrLenInet6
	case FamilyUnix:
		addrLen = v2AddrLenUnix
	}
	if len(body) < addrLen {
		return 0, fmt.Errorf("%w: v2 length %d is too short for the address family", ErrMalformed, len(body))
	}
	switch family {
	case FamilyInet:
		h.Source = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[0:4])), binary.BigEndian.Uint16(body[8:10]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[4:8])), binary.BigEndian.Uint16(body[10:12]))
	case FamilyInet6:
		h.Source = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[0:16])), binary.BigEndian.Uint16(body[32:34]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[16:32])), binary.BigEndian.Uint16(body[34:36]))
	case FamilyUnix:
		h.SourceUnix = unixPath(body[:unixPathLen])
		h.DestinationUnix = unixPath(body[unixPathLen:v2AddrLenUnix])
	}
	tlvs := body[addrLen:]
	count := 0
	if !walkTLVs(tlvs, func(uint8, []byte) { count++ }) {
		return 0, fmt.Errorf("%w: v2 TLV area does not end on a TLV boundary", ErrMalformed)
	}
	if cap(h.TLVs) < count {
		h.TLVs = make([]TLV, 0, count)
	}
	crcAt := -1
	offset := v2HeaderLen + addrLen
	for len(tlvs) > 0 {
		if len(tlvs) < 3 {
			return 0, fmt.Errorf("%w: v2 TLV area ends inside a TLV", ErrMalformed)
		}
		n := int(binary.BigEndian.Uint16(tlvs[1:3]))
		if len(tlvs) < 3+n {
			return 0, fmt.Errorf("%w: v2 TLV %#x of %d bytes overruns the header", ErrMalformed, tlvs[0], n)
		}
		typ, val := tlvs[0], tlvs[3:3+n]
		switch typ {
		case TLVCRC32C:
			if n != 4 || crcAt >= 0 {
				return 0, fmt.Errorf("%w: v2 CRC32C TLV must appear once with 4 bytes", ErrMalformed)
			}
			crcAt = offset + 3
		case TLVUniqueID:
			if n > 128 {
				return 0, fmt.Errorf("%w: v2 UNIQUE_ID of %d bytes exceeds 128", ErrMalformed, n)
			}
		case TLVSSL:
			if n < 5 || !walkTLVs(val[5:], func(uint8, []byte) {}) {
				return 0, fmt.Errorf("%w: v2 SSL TLV is malformed", ErrMalformed)
			}
		}
		h.TLVs = append(h.TLVs, TLV{Type: typ, Value: val})
		tlvs = tlvs[3+n:]
		offset += 3 + n
	}
	if crcAt >= 0 {
		want := binary.BigEndian.Uint32(b[crcAt : crcAt+4])
		if got := checksum(b[:total], crcAt); got != want {
			return 0, fmt.Errorf("%w: header says %08x, computed %08x", ErrBadCRC, want, got)
		}
	}
	return total, nil
}

// checksum computes the CRC32C of header with the four checksum bytes at
// crcAt counted as zero.
func checksum(header []byte, crcAt int) uint32 {
	c := crc32.Update(0, castagnoli, header[:crcAt])
	c = crc32.Update(c, castagnoli, zeroChecksum[:])
	return crc32.Update(c, castagnoli, header[crcAt+4:])
}

// HasCRC reports whether the header carries a CRC32C TLV (which Parse has
// verified).
func (h *Header) HasCRC() bool {
	_, ok := h.TLV(TLVCRC32C)
	return ok
}

// unixPath is a v2 unix address: the bytes up to the first NUL.
func unixPath(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
