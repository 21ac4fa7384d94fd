package proxyv2

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/rampart-edge/caddy-rampart/internal/netaddr"
	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

func init() {
	caddy.RegisterModule(Transport{})
}

// Transport is Caddy's http transport that writes a PROXY v2 header on each
// upstream connection: the client's real source address, the edge address
// the client connected to, and the TLVs configured. Every option of the
// http transport keeps working. A PROXY header belongs to one connection,
// so upstream connections are pooled per header (per client connection and
// TLV values); the pools are bounded and reaped when idle. Requests with no
// client (active health checks) send a LOCAL header.
type Transport struct {
	reverseproxy.HTTPTransport

	// TLVs are added to every header. Values may use placeholders and are
	// evaluated per request; a connection is reused only by requests that
	// produce the same header.
	TLVs []TLVConfig `json:"tlvs,omitempty"`

	// SSL adds the SSL TLV describing the client's TLS connection:
	// version, cipher and the client certificate's CN.
	SSL bool `json:"ssl,omitempty"`

	// CRC32C adds a CRC32C TLV.
	CRC32C bool `json:"crc32c,omitempty"`

	// MaxPools bounds the number of connection pools (distinct headers)
	// kept at once; the least recently used pool is closed when it is
	// exceeded. Default 1024.
	MaxPools int `json:"max_pools,omitempty"`

	// PoolIdleTimeout closes a pool unused for this long. Default: the
	// keepalive idle timeout of the http transport (2m).
	PoolIdleTimeout caddy.Duration `json:"pool_idle_timeout,omitempty"`

	pools *clientPools
}

// DefaultMaxPools is the default bound on connection pools.
const DefaultMaxPools = 1024

// CaddyModule returns the Caddy module information.
func (Transport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.transport.proxy_v2",
		New: func() caddy.Module { return new(Transport) },
	}
}

// validate checks every rule of the transport's own options and of the
// http transport options it cannot honour. Provision runs it for JSON and
// Caddyfile configs alike; the Caddyfile parser also runs it after each
// option, so that the error names the line that broke the rule.
func (t *Transport) validate() error {
	for i := range t.TLVs {
		typ, err := parseTLVType(t.TLVs[i].Type)
		if err != nil {
			return fmt.Errorf("proxy_v2 transport: %v", err)
		}
		t.TLVs[i].typ = typ
	}
	if t.ProxyProtocol != "" {
		return fmt.Errorf("proxy_v2 transport: proxy_protocol %q: the proxy_v2 transport writes the header itself; remove proxy_protocol", t.ProxyProtocol)
	}
	if t.TLS != nil && strings.Contains(t.TLS.ServerName, "{") {
		return fmt.Errorf("proxy_v2 transport: tls_server_name %q: placeholders in the server name are not supported with proxy_v2", t.TLS.ServerName)
	}
	if len(t.Versions) == 1 && t.Versions[0] == "3" {
		return fmt.Errorf("proxy_v2 transport: versions 3: HTTP/3 upstreams cannot carry a PROXY header")
	}
	if t.MaxPools < 0 {
		return fmt.Errorf("proxy_v2 transport: max_pools %d: must be positive", t.MaxPools)
	}
	if t.PoolIdleTimeout < 0 {
		return fmt.Errorf("proxy_v2 transport: pool_idle_timeout %s: must be positive", time.Duration(t.PoolIdleTimeout))
	}
	return nil
}

// Provision validates the options and builds the underlying http
// transport and the pools.
func (t *Transport) Provision(ctx caddy.Context) error {
	if err := t.validate(); err != nil {
		return err
	}
	if t.MaxPools == 0 {
		t.MaxPools = DefaultMaxPools
	}
	if err := t.HTTPTransport.Provision(ctx); err != nil {
		return err
	}
	idle := time.Duration(t.PoolIdleTimeout)
	if idle == 0 {
		idle = t.HTTPTransport.Transport.IdleConnTimeout
	}
	if idle <= 0 {
		idle = 2 * time.Minute
	}
	t.pools = newClientPools(t.HTTPTransport.Transport, t.MaxPools, idle)
	return nil
}

// RoundTrip sends req over a connection that carries its client's header.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.SetScheme(req)
	var buf [headerBufSize]byte
	header, err := t.header(req, buf[:0])
	if err != nil {
		return nil, err
	}
	return t.pools.get(header).RoundTrip(req)
}

// headerBufSize fits the headers of most configurations on the stack.
const headerBufSize = 256

// maxStackTLVs is how many TLVs are built without a heap allocation.
const maxStackTLVs = 8

// header appends the PROXY v2 header for req to dst.
func (t *Transport) header(req *http.Request, dst []byte) ([]byte, error) {
	var tlvs [maxStackTLVs]wire.TLV
	h := wire.Header{Command: wire.CommandLocal, TLVs: tlvs[:0]}
	src, srcErr := netip.ParseAddrPort(req.RemoteAddr)
	local, _ := req.Context().Value(http.LocalAddrContextKey).(net.Addr)
	destination, destinationOK := netaddr.AddrPort(local)
	if srcErr == nil && destinationOK {
		h.Command, h.Source, h.Destination = wire.CommandProxy, src, destination
	}
	if h.Command == wire.CommandProxy {
		repl, _ := req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		for _, tlv := range t.TLVs {
			value := tlv.Value
			if repl != nil {
				value = repl.ReplaceAll(value, "")
			}
			if value != "" {
				h.TLVs = append(h.TLVs, wire.TLV{Type: tlv.typ, Value: []byte(value)})
			}
		}
		if t.SSL {
			h.TLVs = append(h.TLVs, wire.TLV{Type: wire.TLVSSL, Value: wire.EncodeSSL(sslInfo(repl))})
		}
	}
	out, err := h.AppendV2(dst, t.CRC32C)
	if err != nil {
		return nil, fmt.Errorf("proxy_v2 transport: %w", err)
	}
	return out, nil
}

// Cleanup closes the pools and the underlying transport.
func (t *Transport) Cleanup() error {
	if t.pools != nil {
		t.pools.close()
	}
	return t.HTTPTransport.Cleanup()
}

// UnmarshalCaddyfile sets up the transport from Caddyfile tokens:
//
//	transport proxy_v2 {
//	    tlv <type> <value>
//	    ssl
//	    crc32c
//	    max_pools <n>
//	    pool_idle_timeout <duration>
//	    # ...and any option of the http transport
//	}
//
// Options of the http transport are handed to its own unmarshaler one at
// a time, as the user's own tokens between the block's own braces, so that
// every error names the user's line.
func (t *Transport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the transport name
	if d.NextArg() {
		return d.Errf("proxy_v2 transport: unexpected argument %q; options go in a block", d.Val())
	}
	block := d.NextSegment() // the name and, if any, the block with its braces
	if len(block) < 2 {
		return nil
	}
	inner := caddyfile.NewDispenser(block)
	inner.Next()
	for nesting := inner.Nesting(); inner.NextBlock(nesting); {
		segment := inner.NextSegment()
		option := caddyfile.NewDispenser(segment)
		option.Next()
		if err := t.unmarshalOption(option, block, segment); err != nil {
			return err
		}
		if err := t.validate(); err != nil {
			return option.WrapErr(err)
		}
	}
	return nil
}

// unmarshalOption parses the option at d's cursor: one of the transport's
// own, or one of the http transport's, which its unmarshaler reads from
// the option's segment placed inside the transport's block.
func (t *Transport) unmarshalOption(d *caddyfile.Dispenser, block, segment caddyfile.Segment) error {
	option := d.Val()
	switch option {
	case "tlv":
		args := d.RemainingArgs()
		if len(args) != 2 {
			return d.Errf("proxy_v2 transport: tlv takes a type and a value, got %d arguments", len(args))
		}
		t.TLVs = append(t.TLVs, TLVConfig{Type: args[0], Value: args[1]})
	case "ssl", "crc32c":
		if d.NextArg() {
			return d.Errf("proxy_v2 transport: %s takes no argument, got %q", option, d.Val())
		}
		if option == "ssl" {
			t.SSL = true
		} else {
			t.CRC32C = true
		}
	case "max_pools":
		if !d.NextArg() {
			return d.ArgErr()
		}
		n, err := strconv.Atoi(d.Val())
		if err != nil {
			return d.Errf("proxy_v2 transport: max_pools %q: not a number", d.Val())
		}
		t.MaxPools = n
	case "pool_idle_timeout":
		if !d.NextArg() {
			return d.ArgErr()
		}
		dur, err := caddy.ParseDuration(d.Val())
		if err != nil {
			return d.Errf("proxy_v2 transport: pool_idle_timeout %q: not a duration", d.Val())
		}
		t.PoolIdleTimeout = caddy.Duration(dur)
	default:
		name, open, closing := block[0], block[1], block[len(block)-1]
		tokens := make(caddyfile.Segment, 0, len(segment)+3)
		tokens = append(append(append(tokens, name, open), segment...), closing)
		return t.HTTPTransport.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
	}
	if d.NextArg() {
		return d.Errf("proxy_v2 transport: %s: unexpected argument %q", option, d.Val())
	}
	if d.Next() {
		return d.Errf("proxy_v2 transport: %s takes no block", option)
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*Transport)(nil)
	_ caddy.CleanerUpper    = (*Transport)(nil)
	_ http.RoundTripper     = (*Transport)(nil)
	_ caddyfile.Unmarshaler = (*Transport)(nil)
)
