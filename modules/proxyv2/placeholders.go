package proxyv2

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

// Placeholder prefixes: HTTP requests get the header's fields under
// {http.request.proxy.*} (through proxy_v2_vars), layer4 routes under
// {l4.proxy.*}; each has the header's fields and `peer`.
const (
	HTTPPlaceholderPrefix = "http.request.proxy."
	L4PlaceholderPrefix   = "l4.proxy."
)

// placeholderValue returns the header field named name (the part after the
// prefix). Known names without a value give "" and true; unknown names give
// false. h may be nil (no header on the connection).
func placeholderValue(h *wire.Header, name string) (string, bool) {
	if strings.HasPrefix(name, "tlv.") {
		typ, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(name[4:], "0x"), "0X"), 16, 8)
		if err != nil {
			return "", false
		}
		return tlvText(h, uint8(typ)), true
	}
	field, known := headerFields[name]
	if !known || h == nil {
		return "", known
	}
	return field(h), true
}

// headerFields are the placeholder names besides tlv.0xNN and how each is
// read from a header.
var headerFields = map[string]func(h *wire.Header) string{
	"version":   func(h *wire.Header) string { return strconv.Itoa(int(h.Version)) },
	"command":   func(h *wire.Header) string { return h.Command.String() },
	"src":       func(h *wire.Header) string { return endpoint(h, h.Source, h.SourceUnix) },
	"dst":       func(h *wire.Header) string { return endpoint(h, h.Destination, h.DestinationUnix) },
	"alpn":      func(h *wire.Header) string { return tlvText(h, wire.TLVALPN) },
	"authority": func(h *wire.Header) string { return tlvText(h, wire.TLVAuthority) },
	"unique_id": func(h *wire.Header) string { return tlvText(h, wire.TLVUniqueID) },
	"aws.vpce_id": func(h *wire.Header) string {
		return subTLVText(h, wire.TLVAWS, wire.AWSSubVPCEndpointID)
	},
	"azure.link_id": func(h *wire.Header) string { v, _ := h.AzureLinkID(); return v },
	"gcp.psc_id":    func(h *wire.Header) string { v, _ := h.GCPConnectionID(); return v },
	"alibaba.vpc_id": func(h *wire.Header) string {
		return subTLVText(h, wire.TLVAlibaba, wire.AlibabaSubVPCID)
	},
	"alibaba.endpoint_id": func(h *wire.Header) string {
		return subTLVText(h, wire.TLVAlibaba, wire.AlibabaSubEndpointID)
	},
	"alibaba.endpoint_service_id": func(h *wire.Header) string {
		return subTLVText(h, wire.TLVAlibaba, wire.AlibabaSubServiceID)
	},
	"ssl.version":  sslField(func(s wire.SSL) string { return s.Version }),
	"ssl.cn":       sslField(func(s wire.SSL) string { return s.CN }),
	"ssl.cipher":   sslField(func(s wire.SSL) string { return s.Cipher }),
	"ssl.sig_alg":  sslField(func(s wire.SSL) string { return s.SigAlg }),
	"ssl.key_alg":  sslField(func(s wire.SSL) string { return s.KeyAlg }),
	"ssl.verified": sslField(func(s wire.SSL) string { return strconv.FormatBool(s.Verified()) }),
}

// endpoint formats a source or destination: the unix path, the address, or
// nothing.
func endpoint(h *wire.Header, addr netip.AddrPort, unixPath string) string {
	if h.Family == wire.FamilyUnix {
		return unixPath
	}
	if addr.IsValid() {
		return addr.String()
	}
	return ""
}

// sslField reads one part of the SSL TLV; without that TLV it is empty.
func sslField(part func(wire.SSL) string) func(*wire.Header) string {
	return func(h *wire.Header) string {
		if ssl, ok := h.SSL(); ok {
			return part(ssl)
		}
		return ""
	}
}

// tlvText is a TLV's value as placeholders show it; h may be nil.
func tlvText(h *wire.Header, typ uint8) string {
	if h == nil {
		return ""
	}
	v, _ := h.TLV(typ)
	return wire.Printable(v)
}

// subTLVText is a sub-TLV's value as placeholders show it.
func subTLVText(h *wire.Header, typ, sub uint8) string {
	v, _ := h.SubTLV(typ, sub)
	return wire.Printable(v)
}

// peerPlaceholder is the name of the connection's socket peer: the load
// balancer that sent the header (HAProxy's fc_src).
const peerPlaceholder = "peer"

// replacerFunc returns a caddy.ReplacerFunc serving prefix+name from h
// (nil when the connection carried no header) and prefix+"peer" from the
// socket's peer.
func replacerFunc(h *wire.Header, peer net.Addr, prefix string) caddy.ReplacerFunc {
	return func(key string) (any, bool) {
		if !strings.HasPrefix(key, prefix) {
			return nil, false
		}
		name := key[len(prefix):]
		if name == peerPlaceholder {
			if peer == nil {
				return "", true
			}
			return peer.String(), true
		}
		return placeholderValue(h, name)
	}
}
