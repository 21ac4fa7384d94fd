package proxyv2

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

// TLVConfig is one TLV the transport sends.
type TLVConfig struct {
	// Type is alpn, authority, unique_id, netns, or a hex number from 0x01
	// to 0xFF (crc32c, noop and ssl have their own options).
	Type string `json:"type"`
	// Value is the TLV's value; placeholders are replaced per request.
	Value string `json:"value"`

	typ uint8
}

// tlvNames maps the named TLV types of the Caddyfile and JSON.
var tlvNames = map[string]uint8{
	"alpn": wire.TLVALPN, "authority": wire.TLVAuthority, "unique_id": wire.TLVUniqueID, "netns": wire.TLVNetNS,
}

// parseTLVType parses a TLV type name or number.
func parseTLVType(s string) (uint8, error) {
	if typ, ok := tlvNames[strings.ToLower(s)]; ok {
		return typ, nil
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(s), "0x"), 16, 8)
	switch {
	case strings.ToLower(s) == "crc32c" || strings.ToLower(s) == "ssl":
		return 0, fmt.Errorf("tlv type %q: crc32c and ssl have their own options", s)
	case err != nil || !strings.HasPrefix(strings.ToLower(s), "0x"):
		return 0, fmt.Errorf("tlv type %q: use alpn, authority, unique_id, netns or a hex number such as 0xE5", s)
	}
	switch uint8(n) {
	case wire.TLVCRC32C, wire.TLVSSL:
		return 0, fmt.Errorf("tlv type %q: crc32c and ssl have their own options", s)
	case wire.TLVNoop, 0:
		return 0, fmt.Errorf("tlv type %q: noop and 0 are not sent", s)
	}
	return uint8(n), nil
}
