// Package netaddr converts connection addresses and parses configured IP
// ranges, one way for every Rampart module.
package netaddr

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// AddrPort returns the IP and port of a TCP or UDP address, or of any
// address whose String is "ip:port", with IPv4-mapped IPv6 addresses (a
// dual-stack socket's view of IPv4 clients) unmapped.
func AddrPort(a net.Addr) (netip.AddrPort, bool) {
	var ap netip.AddrPort
	switch a := a.(type) {
	case nil:
		return netip.AddrPort{}, false
	case *net.TCPAddr:
		if a == nil {
			return netip.AddrPort{}, false
		}
		ap = a.AddrPort()
	case *net.UDPAddr:
		if a == nil {
			return netip.AddrPort{}, false
		}
		ap = a.AddrPort()
	default:
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return netip.AddrPort{}, false
		}
	}
	if !ap.Addr().IsValid() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// IP returns the IP of a connection address, as AddrPort does.
func IP(a net.Addr) (netip.Addr, bool) {
	ap, ok := AddrPort(a)
	return ap.Addr(), ok
}

// HostIP parses the IP of "ip:port" or of a bare IP, such as an
// http.Request's RemoteAddr, unmapped.
func HostIP(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

// ParsePrefixes parses IP ranges as Caddy's remote_ip matcher does (CIDR
// or a single address, host bits allowed), returned masked.
func ParsePrefixes(exprs []string) ([]netip.Prefix, error) {
	prefixes := make([]netip.Prefix, 0, len(exprs))
	for _, expr := range exprs {
		p, err := caddyhttp.CIDRExpressionToPrefix(expr)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address or CIDR range", expr)
		}
		prefixes = append(prefixes, netip.PrefixFrom(p.Addr().Unmap(), unmappedBits(p)).Masked())
	}
	return prefixes, nil
}

// unmappedBits is the prefix length once an IPv4-mapped address is
// unmapped (::ffff:10.0.0.0/104 is 10.0.0.0/8).
func unmappedBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return max(p.Bits()-96, 0)
	}
	return p.Bits()
}

// Contains reports whether any of the prefixes contains ip.
func Contains(prefixes []netip.Prefix, ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
