package proxyv2

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

func init() {
	caddy.RegisterModule(VarsHandler{})
}

// Placeholder prefixes: HTTP requests get the header's fields under
// {http.request.proxy.*} (through proxy_v2_vars), layer4 routes under
// {l4.proxy.*}.
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
	if h == nil {
		_, known := fieldNames[name]
		return "", known
	}
	switch name {
	case "version":
		return strconv.Itoa(int(h.Version)), true
	case "command":
		return h.Command.String(), true
	case "src":
		if h.Family == wire.FamilyUnix {
			return h.SourceUnix, true
		}
		if h.Source.IsValid() {
			return h.Source.String(), true
		}
		return "", true
	case "dst":
		if h.Family == wire.FamilyUnix {
			return h.DestinationUnix, true
		}
		if h.Destination.IsValid() {
			return h.Destination.String(), true
		}
		return "", true
	case "alpn":
		return tlvText(h, wire.TLVALPN), true
	case "authority":
		return tlvText(h, wire.TLVAuthority), true
	case "unique_id":
		return tlvText(h, wire.TLVUniqueID), true
	case "aws.vpce_id":
		return subTLVText(h, wire.TLVAWS, wire.AWSSubVPCEndpointID), true
	case "azure.link_id":
		v, _ := h.AzureLinkID()
		return v, true
	case "gcp.psc_id":
		v, _ := h.GCPConnectionID()
		return v, true
	case "alibaba.vpc_id":
		return subTLVText(h, wire.TLVAlibaba, wire.AlibabaSubVPCID), true
	case "alibaba.endpoint_id":
		return subTLVText(h, wire.TLVAlibaba, wire.AlibabaSubEndpointID), true
	case "alibaba.endpoint_service_id":
		return subTLVText(h, wire.TLVAlibaba, wire.AlibabaSubServiceID), true
	}
	if strings.HasPrefix(name, "ssl.") {
		if _, known := fieldNames[name]; !known {
			return "", false
		}
		ssl, ok := h.SSL()
		if !ok {
			return "", true
		}
		switch name {
		case "ssl.version":
			return ssl.Version, true
		case "ssl.cn":
			return ssl.CN, true
		case "ssl.cipher":
			return ssl.Cipher, true
		case "ssl.sig_alg":
			return ssl.SigAlg, true
		case "ssl.key_alg":
			return ssl.KeyAlg, true
		case "ssl.verified":
			return strconv.FormatBool(ssl.Verified()), true
		}
	}
	return "", false
}

// fieldNames are the placeholder names besides tlv.0xNN.
var fieldNames = map[string]struct{}{
	"version": {}, "command": {}, "src": {}, "dst": {}, "alpn": {}, "authority": {}, "unique_id": {},
	"ssl.version": {}, "ssl.cn": {}, "ssl.cipher": {}, "ssl.sig_alg": {}, "ssl.key_alg": {}, "ssl.verified": {},
	"aws.vpce_id": {}, "azure.link_id": {}, "gcp.psc_id": {},
	"alibaba.vpc_id": {}, "alibaba.endpoint_id": {}, "alibaba.endpoint_service_id": {},
}

func tlvText(h *wire.Header, typ uint8) string {
	if h == nil {
		return ""
	}
	v, _ := h.TLV(typ)
	return wire.Printable(v)
}

func subTLVText(h *wire.Header, typ, sub uint8) string {
	v, _ := h.SubTLV(typ, sub)
	return wire.Printable(v)
}

// replacerFunc returns a caddy.ReplacerFunc serving prefix+name from h.
func replacerFunc(h *wire.Header, prefix string) caddy.ReplacerFunc {
	return func(key string) (any, bool) {
		if !strings.HasPrefix(key, prefix) {
			return nil, false
		}
		return placeholderValue(h, key[len(prefix):])
	}
}

// VarsHandler publishes the PROXY header of the request's connection as
// {http.request.proxy.*} placeholders for every later handler and the
// access log. Caddy gives a listener wrapper no way to add placeholders to
// requests by itself, hence this one-word directive: proxy_v2_vars.
type VarsHandler struct{}

// CaddyModule returns the Caddy module information.
func (VarsHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.proxy_v2_vars",
		New: func() caddy.Module { return new(VarsHandler) },
	}
}

// ServeHTTP adds the placeholders and calls the next handler.
func (VarsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	var h *wire.Header
	if c, ok := r.Context().Value(connCtxKey{}).(*Conn); ok {
		h = c.Header()
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Map(replacerFunc(h, HTTPPlaceholderPrefix))
	}
	return next.ServeHTTP(w, r)
}

// UnmarshalCaddyfile accepts the bare directive `proxy_v2_vars`.
func (*VarsHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		return d.Errf("proxy_v2_vars: takes no arguments, got %q", d.Val())
	}
	if d.NextBlock(d.Nesting()) {
		return d.Errf("proxy_v2_vars: takes no block")
	}
	return nil
}

// Interface guards
var (
	_ caddyhttp.MiddlewareHandler = (*VarsHandler)(nil)
	_ caddyfile.Unmarshaler       = (*VarsHandler)(nil)
)
