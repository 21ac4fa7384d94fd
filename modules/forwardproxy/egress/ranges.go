package egress

import "net/netip"

// privateRanges are the destinations refused by default: what an egress
// proxy must not let a client reach on the proxy's own side. IPv4-mapped
// addresses are unmapped before the check, so ::ffff:10.0.0.1 is 10.0.0.1.
var privateRanges = mustPrefixes(
	"0.0.0.0/8",      // "this network"; 0.0.0.0 reaches the local host
	"10.0.0.0/8",     // private
	"100.64.0.0/10",  // CGNAT (and Alibaba's metadata 100.100.100.200)
	"127.0.0.0/8",    // loopback
	"169.254.0.0/16", // link-local, cloud metadata 169.254.169.254
	"172.16.0.0/12",  // private
	"192.0.0.0/24",   // IETF protocol assignments
	"192.168.0.0/16", // private
	"198.18.0.0/15",  // benchmarking
	"224.0.0.0/4",    // multicast
	"240.0.0.0/4",    // reserved, broadcast
	"::/96",          // unspecified, loopback, IPv4-compatible
	"64:ff9b::/96",   // NAT64: reaches any IPv4, private included
	"64:ff9b:1::/48", // local-use NAT64
	"100::/64",       // discard
	"2001::/32",      // Teredo (embeds IPv4)
	"2002::/16",      // 6to4 (embeds IPv4)
	"fc00::/7",       // unique local, AWS metadata fd00:ec2::254
	"fe80::/10",      // link-local
	"fec0::/10",      // site-local (deprecated)
	"ff00::/8",       // multicast
)

func mustPrefixes(exprs ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(exprs))
	for i, e := range exprs {
		out[i] = netip.MustParsePrefix(e)
	}
	return out
}

// IsPrivate reports whether ip is in a range refused by default (loopback,
// private, link-local, CGNAT, multicast, reserved, cloud metadata, and IPv6
// ranges that embed IPv4 addresses).
func IsPrivate(ip netip.Addr) bool {
	return containsIP(privateRanges, ip)
}

func containsIP(prefixes []netip.Prefix, ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
