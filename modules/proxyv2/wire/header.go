// Package wire reads and writes PROXY protocol headers, versions 1 and 2, as
// the HAProxy specification defines them: addresses of every family, the LOCAL
// command, TLVs (ALPN, AUTHORITY, CRC32C, UNIQUE_ID, SSL and the cloud vendors'
// types) and CRC32C verification. It imports nothing from Caddy.
package wire

import (
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"strconv"
)

// Command is what a PROXY header asks of the receiver.
type Command uint8

const (
	// CommandLocal marks a connection the proxy made itself (a health
	// check): the receiver uses the real socket addresses.
	CommandLocal Command = 0
	// CommandProxy marks a relayed connection: the header's addresses are
	// the original client's and the original destination.
	CommandProxy Command = 1
)

// String returns LOCAL or PROXY.
func (c Command) String() string {
	if c == CommandLocal {
		return "LOCAL"
	}
	return "PROXY"
}

// Family is the address family of a header (the high nibble of the v2
// family byte).
type Family uint8

const (
	// FamilyUnspec carries no addresses (v1 UNKNOWN).
	FamilyUnspec Family = 0x0
	// FamilyInet carries IPv4 addresses.
	FamilyInet Family = 0x1
	// FamilyInet6 carries IPv6 addresses.
	FamilyInet6 Family = 0x2
	// FamilyUnix carries AF_UNIX socket paths.
	FamilyUnix Family = 0x3
)

// Transport is the transport protocol of a header (the low nibble of the v2
// family byte).
type Transport uint8

const (
	// TransportUnspec is an unknown transport.
	TransportUnspec Transport = 0x0
	// TransportStream is TCP or a stream UNIX socket.
	TransportStream Transport = 0x1
	// TransportDatagram is UDP or a datagram UNIX socket.
	TransportDatagram Transport = 0x2
)

// TLV type numbers from the PROXY protocol specification and the cloud
// vendors that use the custom range.
const (
	TLVALPN      uint8 = 0x01 // application protocol (ALPN) the client negotiated
	TLVAuthority uint8 = 0x02 // host name the client asked for (SNI)
	TLVCRC32C    uint8 = 0x03 // CRC32C of the whole header
	TLVNoop      uint8 = 0x04 // padding, ignored
	TLVUniqueID  uint8 = 0x05 // opaque connection id, at most 128 bytes
	TLVSSL       uint8 = 0x20 // TLS details, with sub-TLVs
	TLVNetNS     uint8 = 0x30 // network namespace name
	TLVGCP       uint8 = 0xE0 // Google Cloud Private Service Connect id (uint64)
	TLVAlibaba   uint8 = 0xE1 // Alibaba Cloud PrivateLink ids (sub-typed)
	TLVAWS       uint8 = 0xEA // AWS VPC endpoint id (sub-typed)
	TLVAzure     uint8 = 0xEE // Azure Private Link LinkID (sub-typed)
)

// Sub-TLV types inside the SSL TLV.
const (
	SSLSubVersion uint8 = 0x21 // TLS version, e.g. "TLSv1.3"
	SSLSubCN      uint8 = 0x22 // client certificate common name
	SSLSubCipher  uint8 = 0x23 // cipher suite name
	SSLSubSigAlg  uint8 = 0x24 // certificate signature algorithm
	SSLSubKeyAlg  uint8 = 0x25 // certificate key algorithm
)

// Bits of the SSL TLV's client field.
const (
	SSLClientSSL      uint8 = 0x01 // the client connected over TLS
	SSLClientCertConn uint8 = 0x02 // a client certificate was sent on this connection
	SSLClientCertSess uint8 = 0x04 // a client certificate was sent on this session
)

// Sub-types of the vendor TLVs.
const (
	AWSSubVPCEndpointID       uint8 = 0x01
	AzureSubPrivateEndpointID uint8 = 0x01
	AlibabaSubVPCID           uint8 = 0x01
	AlibabaSubEndpointID      uint8 = 0x02
	AlibabaSubServiceID       uint8 = 0x03
)

// MaxV1Length is the longest v1 header the specification allows, CRLF
// included.
const MaxV1Length = 107

// TLV is one type-length-value record of a v2 header. After parsing, Value
// aliases the buffer the header was parsed from.
type TLV struct {
	Type  uint8
	Value []byte
}

// Header is a parsed or to-be-written PROXY header.
type Header struct {
	// Version is 1 or 2.
	Version uint8
	// Command is PROXY or LOCAL (LOCAL exists in v2 only).
	Command Command
	// Family is the address family of Source and Destination.
	Family Family
	// Transport is the transport protocol.
	Transport Transport
	// Source is the original client address (FamilyInet, FamilyInet6).
	Source netip.AddrPort
	// Destination is the address the client connected to.
	Destination netip.AddrPort
	// SourceUnix and DestinationUnix are the socket paths of FamilyUnix.
	SourceUnix, DestinationUnix string
	// TLVs are the v2 TLVs in wire order, CRC32C and NOOP included.
	TLVs []TLV
}

// TLV returns the value of the first TLV of type typ.
func (h *Header) TLV(typ uint8) ([]byte, bool) {
	for i := range h.TLVs {
		if h.TLVs[i].Type == typ {
			return h.TLVs[i].Value, true
		}
	}
	return nil, false
}

// SubTLV returns the payload of the first TLV of type typ whose first byte is
// the sub-type sub (the layout AWS, Azure and Alibaba use).
func (h *Header) SubTLV(typ, sub uint8) ([]byte, bool) {
	for i := range h.TLVs {
		v := h.TLVs[i].Value
		if h.TLVs[i].Type == typ && len(v) > 0 && v[0] == sub {
			return v[1:], true
		}
	}
	return nil, false
}

// SSL is the decoded SSL TLV.
type SSL struct {
	// Client holds the SSLClient* bits.
	Client uint8
	// Verify is zero when the client certificate was verified.
	Verify uint32
	// Version, CN, Cipher, SigAlg and KeyAlg are the sub-TLVs (empty when
	// absent).
	Version, CN, Cipher, SigAlg, KeyAlg string
}

// Verified reports whether the client presented a certificate that the
// proxy verified.
func (s SSL) Verified() bool {
	return s.Client&(SSLClientCertConn|SSLClientCertSess) != 0 && s.Verify == 0
}

// SSL decodes the SSL TLV when the header has a well-formed one.
func (h *Header) SSL() (SSL, bool) {
	v, ok := h.TLV(TLVSSL)
	if !ok || len(v) < 5 {
		return SSL{}, false
	}
	s := SSL{Client: v[0], Verify: binary.BigEndian.Uint32(v[1:5])}
	ok = walkTLVs(v[5:], func(typ uint8, val []byte) {
		switch typ {
		case SSLSubVersion:
			s.Version = string(val)
		case SSLSubCN:
			s.CN = string(val)
		case SSLSubCipher:
			s.Cipher = string(val)
		case SSLSubSigAlg:
			s.SigAlg = string(val)
		case SSLSubKeyAlg:
			s.KeyAlg = string(val)
		}
	})
	return s, ok
}

// GCPConnectionID returns the Private Service Connect id as a decimal string.
func (h *Header) GCPConnectionID() (string, bool) {
	v, ok := h.TLV(TLVGCP)
	if !ok || len(v) != 8 {
		return "", false
	}
	return strconv.FormatUint(binary.BigEndian.Uint64(v), 10), true
}

// AzureLinkID returns the Private Link LinkID as a decimal string.
func (h *Header) AzureLinkID() (string, bool) {
	v, ok := h.SubTLV(TLVAzure, AzureSubPrivateEndpointID)
	if !ok || len(v) != 4 {
		return "", false
	}
	return strconv.FormatUint(uint64(binary.LittleEndian.Uint32(v)), 10), true
}

// Printable returns v as text when every byte is printable ASCII, otherwise
// as lower-case hex prefixed with 0x.
func Printable(v []byte) string {
	for _, c := range v {
		if c < 0x20 || c > 0x7e {
			return "0x" + hex.EncodeToString(v)
		}
	}
	return string(v)
}

// walkTLVs calls fn for each TLV in b and reports whether b is exactly a
// sequence of whole TLVs.
func walkTLVs(b []byte, fn func(typ uint8, val []byte)) bool {
	for len(b) > 0 {
		if len(b) < 3 {
			return false
		}
		n := int(binary.BigEndian.Uint16(b[1:3]))
		if len(b) < 3+n {
			return false
		}
		fn(b[0], b[3:3+n])
		b = b[3+n:]
	}
	return true
}
