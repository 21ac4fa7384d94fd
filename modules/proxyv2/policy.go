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

	"github.com/rampart-edge/caddy-rampart/internal/netaddr"
	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

// Defaults and bounds of the receiving policy.
const (
	DefaultTimeout   = 5 * time.Second
	DefaultMaxHeader = 4096
	// MaxHeaderLimit is the longest header the protocol can express: the
	// 16-byte v2 prefix and a 65,535-byte payload.
	MaxHeaderLimit = 16 + 0xffff
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
	// Trust lists the IP ranges (CIDR, host bits allowed and masked as
	// Caddy's remote_ip does, or single IPs) of the load balancers that
	// send PROXY headers. A connection from these sources MUST start with
	// a valid header or it is dropped. In the Caddyfile, `private_ranges`
	// expands to the private and loopback ranges.
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

	// MaxHeader is the largest header accepted, in bytes, from 107 (the
	// longest v1 header) to 65551 (the longest v2 header); default 4096.
	MaxHeader int `json:"max_header,omitempty"`

	trusted []netip.Prefix
	allowV1 bool
	allowV2 bool
}

// validate checks every rule of the policy; owner names the module in
// errors. Zero values stand for the defaults. Provision runs it for JSON
// and Caddyfile configs alike; the Caddyfile parser also runs it after each
// option, so that the error names the line that broke the rule.
func (p *Policy) validate(owner string) error {
	if _, err := netaddr.ParsePrefixes(p.Trust); err != nil {
		return fmt.Errorf("%s: trust: %v", owner, err)
	}
	switch p.Untrusted {
	case "", UntrustedReject, UntrustedPlain:
	default:
		return fmt.Errorf("%s: untrusted %q: must be %q or %q", owner, p.Untrusted, UntrustedReject, UntrustedPlain)
	}
	for _, v := range p.Versions {
		if v != 1 && v != 2 {
			return fmt.Errorf("%s: versions: v%d is not a PROXY protocol version (v1 or v2)", owner, v)
		}
	}
	if p.Timeout < 0 {
		return fmt.Errorf("%s: timeout %s: must be positive", owner, time.Duration(p.Timeout))
	}
	if p.MaxHeader != 0 && (p.MaxHeader < wire.MaxV1Length || p.MaxHeader > MaxHeaderLimit) {
		return fmt.Errorf("%s: max_header %d: must be from %d to %d bytes", owner, p.MaxHeader, wire.MaxV1Length, MaxHeaderLimit)
	}
	return nil
}

// validateWhole checks the rule that concerns the options together.
func (p *Policy) validateWhole(owner string) error {
	if len(p.Trust) == 0 && (p.Untrusted == "" || p.Untrusted == UntrustedReject) {
		return fmt.Errorf("%s: no trust ranges and untrusted %q: every connection would be rejected", owner, UntrustedReject)
	}
	return nil
}

// provision validates the policy and sets it up for use; owner names the
// module in errors.
func (p *Policy) provision(owner string) error {
	if err := p.validate(owner); err != nil {
		return err
	}
	if err := p.validateWhole(owner); err != nil {
		return err
	}
	p.trusted, _ = netaddr.ParsePrefixes(p.Trust)
	if p.Untrusted == "" {
		p.Untrusted = UntrustedReject
	}
	if len(p.Versions) == 0 {
		p.Versions = []int{1, 2}
	}
	p.allowV1, p.allowV2 = slices.Contains(p.Versions, 1), slices.Contains(p.Versions, 2)
	if p.Timeout == 0 {
		p.Timeout = caddy.Duration(DefaultTimeout)
	}
	if p.MaxHeader == 0 {
		p.MaxHeader = DefaultMaxHeader
	}
	return nil
}

// trusts reports whether a connection from remote must send a header.
func (p *Policy) trusts(remote net.Addr) bool {
	ip, ok := netaddr.IP(remote)
	return ok && netaddr.Contains(p.trusted, ip)
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

// unmarshalPolicyBlock parses `<directive> { <policy options> }`:
//
//	proxy_v2 {
//	    trust <ranges...>
//	    untrusted reject|plain
//	    versions v1 v2
//	    timeout <duration>
//	    require_crc
//	    max_header <bytes>
//	}
//
// It reads the syntax; the rules are validate's, run after each option.
func (p *Policy) unmarshalPolicyBlock(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	directive := d.Val()
	at := caddyfile.NewDispenser(caddyfile.Segment{d.Token()}) // for errors of the whole block
	at.Next()
	if d.NextArg() {
		return d.Errf("%s: unexpected argument %q; options go in a block", directive, d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := p.unmarshalOption(d, directive); err != nil {
			return err
		}
		if err := p.validate(directive); err != nil {
			return d.WrapErr(err)
		}
	}
	if err := p.validateWhole(directive); err != nil {
		return at.WrapErr(err)
	}
	return nil
}

// unmarshalOption parses the policy option at the dispenser's cursor.
func (p *Policy) unmarshalOption(d *caddyfile.Dispenser, directive string) error {
	option := d.Val()
	switch option {
	case "trust":
		if !d.NextArg() {
			return d.Errf("%s: trust needs at least one IP range", directive)
		}
		for {
			if d.Val() == "private_ranges" {
				p.Trust = append(p.Trust, caddyhttp.PrivateRangesCIDR()...)
			} else {
				p.Trust = append(p.Trust, d.Val())
			}
			if !d.NextArg() {
				break
			}
		}
	case "untrusted":
		if !d.NextArg() {
			return d.ArgErr()
		}
		p.Untrusted = d.Val()
	case "versions":
		p.Versions = nil
		for d.NextArg() {
			v, err := strconv.Atoi(trimV(d.Val()))
			if err != nil {
				return d.Errf("%s: versions %q: must be v1 and/or v2", directive, d.Val())
			}
			if !slices.Contains(p.Versions, v) {
				p.Versions = append(p.Versions, v)
			}
		}
		if len(p.Versions) == 0 {
			return d.Errf("%s: versions needs v1 and/or v2", directive)
		}
	case "timeout":
		if !d.NextArg() {
			return d.ArgErr()
		}
		dur, err := caddy.ParseDuration(d.Val())
		if err != nil {
			return d.Errf("%s: timeout %q: not a duration", directive, d.Val())
		}
		p.Timeout = caddy.Duration(dur)
	case "require_crc":
		p.RequireCRC = true
	case "max_header":
		if !d.NextArg() {
			return d.ArgErr()
		}
		n, err := strconv.Atoi(d.Val())
		if err != nil {
			return d.Errf("%s: max_header %q: not a byte count", directive, d.Val())
		}
		p.MaxHeader = n
	default:
		return d.Errf("%s: unknown option %q", directive, option)
	}
	if d.NextArg() {
		return d.Errf("%s: %s: unexpected argument %q", directive, option, d.Val())
	}
	if d.NextBlock(d.Nesting()) {
		d.Prev() // to the brace, on the option's line
		return d.Errf("%s: %s takes no block", directive, option)
	}
	return nil
}

// trimV strips the v of "v1" and "v2".
func trimV(s string) string {
	if len(s) > 1 && (s[0] == 'v' || s[0] == 'V') {
		return s[1:]
	}
	return s
}
