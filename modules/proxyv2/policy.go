// Package proxyv2 receives and sends the PROXY protocol in Caddy: the
// listener wrapper caddy.listeners.proxy_v2, the layer4 handler
// layer4.handlers.proxy_v2, the reverse_proxy transport
// http.reverse_proxy.transport.proxy_v2 and the proxy_v2_vars handler that
// publishes header fields as placeholders.
package proxyv2

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

// Defaults of the receiving policy.
const (
	DefaultTimeout   = 5 * time.Second
	DefaultMaxHeader = 4096
)

// Untrusted modes.
const (
	UntrustedReject = "reject"
	UntrustedPlain  = "plain"
)

// Policy is how a receiver treats PROXY headers: which sources must send
// one, what happens to the others, and which headers are acceptable. The
// listener wrapper and the layer4 handler share it.
type Policy struct {
	// Trust lists the CIDR ranges (or single IPs) of the load balancers
	// that send PROXY headers. A connection from these sources MUST start
	// with a valid header or it is dropped. `private_ranges` expands to
	// the private and loopback ranges.
	Trust []string `json:"trust,omitempty"`

	// Untrusted is what happens to connections from other sources:
	// "reject" (default) closes them at once; "plain" serves them with
	// their socket address, and drops any of them that sends a PROXY
	// header anyway (a client must not choose its own address).
	Untrusted string `json:"untrusted,omitempty"`

	// Versions lists the accepted header versions, 1 and/or 2 (default
	// both). A header of another version drops the connection.
	Versions []int `json:"versions,omitempty"`

	// Timeout bounds how long a trusted source may take to send its whole
	// header (default 5s).
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// RequireCRC drops v2 headers that carry no CRC32C TLV. A CRC32C that
	// does not match always drops the connection.
	RequireCRC bool `json:"require_crc,omitempty"`

	// MaxHeader is the largest header accepted, in bytes (default 4096).
	MaxHeader int `json:"max_header,omitempty"`

	trusted []netip.Prefix
	allowV1 bool
	allowV2 bool
}

// provision parses the policy; owner names the module in errors.
func (p *Policy) provision(owner string) error {
	p.trusted = p.trusted[:0]
	for _, raw := range p.Trust {
		prefix, err := parsePrefix(raw)
		if err != nil {
			return fmt.Errorf("%s: trust %q: %v", owner, raw, err)
		}
		p.trusted = append(p.trusted, prefix)
	}
	switch p.Untrusted {
	case "":
		p.Untrusted = UntrustedReject
	case UntrustedReject, UntrustedPlain:
	default:
		return fmt.Errorf("%s: untrusted %q: must be %q or %q", owner, p.Untrusted, UntrustedReject, UntrustedPlain)
	}
	if len(p.Versions) == 0 {
		p.Versions = []int{1, 2}
	}
	p.allowV1, p.allowV2 = false, false
	for _, v := range p.Versions {
		switch v {
		case 1:
			p.allowV1 = true
		case 2:
			p.allowV2 = true
		default:
			return fmt.Errorf("%s: versions: %d is not a PROXY protocol version (1 or 2)", owner, v)
		}
	}
	if p.Timeout == 0 {
		p.Timeout = caddy.Duration(DefaultTimeout)
	}
	if p.Timeout < 0 {
		return fmt.Errorf("%s: timeout %s must be positive", owner, time.Duration(p.Timeout))
	}
	if p.MaxHeader == 0 {
		p.MaxHeader = DefaultMaxHeader
	}
	if p.MaxHeader < wire.MaxV1Length {
		return fmt.Errorf("%s: max_header %d is below %d, the length of the longest v1 header", owner, p.MaxHeader, wire.MaxV1Length)
	}
	if len(p.trusted) == 0 && p.Untrusted == UntrustedReject {
		return fmt.Errorf("%s: no trust ranges and untrusted %q: every connection would be rejected", owner, UntrustedReject)
	}
	return nil
}

func parsePrefix(raw string) (netip.Prefix, error) {
	if prefix, err := netip.ParsePrefix(raw); err == nil {
		if prefix != prefix.Masked() {
			return netip.Prefix{}, fmt.Errorf("has host bits set; did you mean %s?", prefix.Masked())
		}
		return prefix, nil
	}
	addr, err := netip.ParseAddr(raw)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not a CIDR range or IP address")
	}
	return netip.PrefixFrom(addr, addr.BitLen()), nil
}

// trusts reports whether a connection from remote must send a header.
func (p *Policy) trusts(remote net.Addr) bool {
	addr, ok := addrOf(remote)
	if !ok {
		return false
	}
	for _, prefix := range p.trusted {
		if prefix.Contains(addr) {
			return true
		}
	}
	return false
}

// addrOf returns the IP of a TCP or UDP address, IPv4-mapped addresses
// unmapped.
func addrOf(a net.Addr) (netip.Addr, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		addr, ok := netip.AddrFromSlice(a.IP)
		return addr.Unmap(), ok
	case *net.UDPAddr:
		addr, ok := netip.AddrFromSlice(a.IP)
		return addr.Unmap(), ok
	}
	if a == nil {
		return netip.Addr{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap(), err == nil
}

// check applies the version and CRC rules to a parsed header and returns
// the result to count when it is refused.
func (p *Policy) check(h *wire.Header) (Result, error) {
	if (h.Version == 1 && !p.allowV1) || (h.Version == 2 && !p.allowV2) {
		return ResultVersion, fmt.Errorf("PROXY v%d header refused: versions %v", h.Version, p.Versions)
	}
	if p.RequireCRC && h.Version == 2 && !h.HasCRC() {
		return ResultMissingCRC, fmt.Errorf("PROXY v2 header without the CRC32C TLV refused: require_crc")
	}
	return ResultOK, nil
}

// unmarshalOption parses one policy option of a Caddyfile block; it
// returns false when the option is not a policy option.
func (p *Policy) unmarshalOption(d *caddyfile.Dispenser, directive string) (bool, error) {
	option := d.Val()
	switch option {
	case "trust":
		if !d.NextArg() {
			return true, d.Errf("%s: trust needs at least one CIDR range", directive)
		}
		for {
			if d.Val() == "private_ranges" {
				p.Trust = append(p.Trust, caddyhttp.PrivateRangesCIDR()...)
			} else {
				if _, err := parsePrefix(d.Val()); err != nil {
					return true, d.Errf("%s: trust %q: %v", directive, d.Val(), err)
				}
				p.Trust = append(p.Trust, d.Val())
			}
			if !d.NextArg() {
				break
			}
		}
	case "untrusted":
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		if v := d.Val(); v != UntrustedReject && v != UntrustedPlain {
			return true, d.Errf("%s: untrusted %q: must be %q or %q", directive, v, UntrustedReject, UntrustedPlain)
		}
		p.Untrusted = d.Val()
	case "versions":
		p.Versions = nil
		for d.NextArg() {
			v, err := strconv.Atoi(trimV(d.Val()))
			if err != nil || (v != 1 && v != 2) {
				return true, d.Errf("%s: versions %q: must be v1 and/or v2", directive, d.Val())
			}
			if !slices.Contains(p.Versions, v) {
				p.Versions = append(p.Versions, v)
			}
		}
		if len(p.Versions) == 0 {
			return true, d.Errf("%s: versions needs v1 and/or v2", directive)
		}
	case "timeout":
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		dur, err := caddy.ParseDuration(d.Val())
		if err != nil || dur <= 0 {
			return true, d.Errf("%s: timeout %q: not a positive duration", directive, d.Val())
		}
		p.Timeout = caddy.Duration(dur)
	case "require_crc":
		p.RequireCRC = true
	case "max_header":
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		n, err := strconv.Atoi(d.Val())
		if err != nil || n < wire.MaxV1Length || n > 16+0xffff {
			return true, d.Errf("%s: max_header %q: must be a byte count from %d to %d", directive, d.Val(), wire.MaxV1Length, 16+0xffff)
		}
		p.MaxHeader = n
	default:
		return false, nil
	}
	if d.NextArg() {
		return true, d.Errf("%s: %s: unexpected argument %q", directive, option, d.Val())
	}
	return true, nil
}

func trimV(s string) string {
	if len(s) > 1 && (s[0] == 'v' || s[0] == 'V') {
		return s[1:]
	}
	return s
}

// unmarshalPolicyBlock parses `<directive> { <policy options> }`.
func (p *Policy) unmarshalPolicyBlock(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	directive := d.Val()
	if d.NextArg() {
		return d.Errf("%s: unexpected argument %q; options go in a block", directive, d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		ok, err := p.unmarshalOption(d, directive)
		if err != nil {
			return err
		}
		if !ok {
			return d.Errf("%s: unknown option %q", directive, d.Val())
		}
	}
	return nil
}
