package proxyv2

import (
	"container/list"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

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

// TLVConfig is one TLV the transport sends.
type TLVConfig struct {
	// Type is alpn, authority, unique_id, netns, or a number from 0x01 to
	// 0xFF (crc32c, noop and ssl have their own options).
	Type string `json:"type"`
	// Value is the TLV's value; placeholders are replaced per request.
	Value string `json:"value"`

	typ uint8
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
	if err != nil || !strings.HasPrefix(strings.ToLower(s), "0x") {
		return 0, fmt.Errorf("TLV type %q: use alpn, authority, unique_id, netns or a hex number such as 0xE5", s)
	}
	switch uint8(n) {
	case wire.TLVCRC32C, wire.TLVNoop, wire.TLVSSL, 0:
		return 0, fmt.Errorf("TLV type %q: crc32c and ssl have their own options; noop and 0 are not sent", s)
	}
	return uint8(n), nil
}

// Provision builds the underlying http transport and the pools.
func (t *Transport) Provision(ctx caddy.Context) error {
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
	if t.MaxPools == 0 {
		t.MaxPools = DefaultMaxPools
	}
	if t.MaxPools < 0 {
		return fmt.Errorf("proxy_v2 transport: max_pools %d must be positive", t.MaxPools)
	}
	if err := t.HTTPTransport.Provision(ctx); err != nil {
		return err
	}
	idle := time.Duration(t.PoolIdleTimeout)
	if idle <= 0 {
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
	destination, destinationOK := addrPortOf(local)
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

// sslInfo describes the client's TLS connection as the SSL TLV does. The
// upstream request reverse_proxy hands a transport carries no TLS state,
// so it comes from the request's placeholders. Verify is 0 when the client
// presented a certificate: Caddy completes a handshake with a client
// certificate only if it passes the site's client_auth verification (modes
// `request` and `require` do not verify; see the README).
func sslInfo(repl *caddy.Replacer) wire.SSL {
	s := wire.SSL{Verify: 1}
	if repl == nil {
		return s
	}
	version, _ := repl.GetString("http.request.tls.version")
	if version == "" {
		return s
	}
	s.Client = wire.SSLClientSSL
	s.Version = tlsVersionName(version)
	s.Cipher, _ = repl.GetString("http.request.tls.cipher_suite")
	der, _ := repl.GetString("http.request.tls.client.certificate_der_base64")
	raw, err := base64.StdEncoding.DecodeString(der)
	if der == "" || err != nil {
		return s
	}
	cert, err := x509.ParseCertificate(raw)
	if err != nil {
		return s
	}
	s.Client |= wire.SSLClientCertConn
	s.Verify = 0
	s.CN = cert.Subject.CommonName
	s.SigAlg = cert.SignatureAlgorithm.String()
	s.KeyAlg = keyAlgName(cert)
	return s
}

// tlsVersionName turns Caddy's "tls1.3" into HAProxy's and OpenSSL's
// "TLSv1.3".
func tlsVersionName(caddyName string) string {
	switch caddyName {
	case "tls1.0":
		return "TLSv1"
	case "tls1.1", "tls1.2", "tls1.3":
		return "TLSv" + strings.TrimPrefix(caddyName, "tls")
	}
	return caddyName
}

// keyAlgName names the certificate's key the way HAProxy does: RSA2048,
// EC256, ED25519.
func keyAlgName(cert *x509.Certificate) string {
	switch key := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		return "RSA" + strconv.Itoa(key.N.BitLen())
	case *ecdsa.PublicKey:
		return "EC" + strconv.Itoa(key.Curve.Params().BitSize)
	case ed25519.PublicKey:
		return "ED25519"
	}
	return cert.PublicKeyAlgorithm.String()
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
func (t *Transport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	name := d.Token()
	httpTokens := []caddyfile.Token{name, {File: name.File, Line: name.Line, Text: "{"}}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		option := d.Val()
		switch option {
		case "tlv":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("proxy_v2 transport: tlv takes a type and a value, got %d arguments", len(args))
			}
			if _, err := parseTLVType(args[0]); err != nil {
				return d.Errf("proxy_v2 transport: %v", err)
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
			if err != nil || n <= 0 {
				return d.Errf("proxy_v2 transport: max_pools %q: not a positive number", d.Val())
			}
			t.MaxPools = n
		case "pool_idle_timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("proxy_v2 transport: pool_idle_timeout %q: not a positive duration", d.Val())
			}
			t.PoolIdleTimeout = caddy.Duration(dur)
		case "proxy_protocol":
			return d.Errf("proxy_v2 transport: proxy_protocol: the proxy_v2 transport writes the header itself")
		default:
			httpTokens = append(httpTokens, d.NextSegment()...)
		}
	}
	last := name.Line
	if n := len(httpTokens); n > 0 {
		last = httpTokens[n-1].Line
	}
	httpTokens = append(httpTokens, caddyfile.Token{File: name.File, Line: last + 1, Text: "}"})
	return t.HTTPTransport.UnmarshalCaddyfile(caddyfile.NewDispenser(httpTokens))
}

// clientPools holds one http.Transport per distinct header, bounded in
// number (least recently used first out) and reaped when idle.
type clientPools struct {
	base *http.Transport
	max  int
	idle time.Duration

	mu      sync.Mutex
	entries map[string]*list.Element
	lru     list.List // of *clientPool, most recent first
	stop    chan struct{}
}

type clientPool struct {
	header   string
	rt       *http.Transport
	lastUsed time.Time
}

func newClientPools(base *http.Transport, maxPools int, idle time.Duration) *clientPools {
	p := &clientPools{base: base, max: maxPools, idle: idle, entries: make(map[string]*list.Element), stop: make(chan struct{})}
	go p.reap()
	return p
}

// get returns the transport whose connections start with header.
func (p *clientPools) get(header []byte) *http.Transport {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if el, ok := p.entries[string(header)]; ok {
		pool := el.Value.(*clientPool)
		pool.lastUsed = now
		p.lru.MoveToFront(el)
		return pool.rt
	}
	pool := &clientPool{header: string(header), rt: p.base.Clone(), lastUsed: now}
	dial := p.base.DialContext
	pool.rt.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if _, err := conn.Write([]byte(pool.header)); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("writing PROXY header to %s: %w", addr, err)
		}
		return conn, nil
	}
	p.entries[pool.header] = p.lru.PushFront(pool)
	for p.lru.Len() > p.max {
		p.remove(p.lru.Back())
	}
	return pool.rt
}

func (p *clientPools) remove(el *list.Element) {
	pool := p.lru.Remove(el).(*clientPool)
	delete(p.entries, pool.header)
	pool.rt.CloseIdleConnections()
}

// reap closes the pools idle for longer than p.idle.
func (p *clientPools) reap() {
	ticker := time.NewTicker(max(p.idle/2, time.Second))
	defer ticker.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-ticker.C:
			p.mu.Lock()
			for el := p.lru.Back(); el != nil; {
				prev := el.Prev()
				if now.Sub(el.Value.(*clientPool).lastUsed) > p.idle {
					p.remove(el)
				}
				el = prev
			}
			p.mu.Unlock()
		}
	}
}

// len returns the number of pools.
func (p *clientPools) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lru.Len()
}

func (p *clientPools) close() {
	close(p.stop)
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.lru.Len() > 0 {
		p.remove(p.lru.Back())
	}
}

// Interface guards
var (
	_ caddy.Provisioner     = (*Transport)(nil)
	_ caddy.CleanerUpper    = (*Transport)(nil)
	_ http.RoundTripper     = (*Transport)(nil)
	_ caddyfile.Unmarshaler = (*Transport)(nil)
)
