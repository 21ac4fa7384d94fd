package proxyv2

import (
	"net"
	"net/netip"
)

// tcpAddr converts an address from a header to the type Caddy expects
// from a TCP connection, IPv4-mapped addresses unmapped.
func tcpAddr(ap netip.AddrPort) *net.TCPAddr {
	return &net.TCPAddr{IP: ap.Addr().Unmap().AsSlice(), Port: int(ap.Port())}
}

// addrPortOf converts a TCP or UDP address to a netip.AddrPort.
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	ip, ok := addrOf(a)
	if !ok {
		return netip.AddrPort{}, false
	}
	var port int
	switch a := a.(type) {
	case *net.TCPAddr:
		port = a.Port
	case *net.UDPAddr:
		port = a.Port
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.AddrPort{}, false
		}
		port = int(ap.Port())
	}
	return netip.AddrPortFrom(ip, uint16(port)), true
}
