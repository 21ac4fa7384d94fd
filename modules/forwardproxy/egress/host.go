// Package egress decides where a forward proxy may connect: it normalises
// destination hosts (names and every spelling of an IP literal), matches
// names, wildcards and address ranges, knows the ranges that must never be
// reached by default (loopback, private, link-local, CGNAT, multicast, cloud
// metadata) and parses block lists. It imports no Caddy package: the
// forward_proxy handler resolves names and dials what this package allowed.
package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Host is a normalised destination host: exactly one of Name and IP is set.
type Host struct {
	// Name is a lower-case DNS name without a trailing dot.
	Name string
	// IP is an IP literal, IPv4-mapped IPv6 unmapped.
	IP netip.Addr
}

// String returns the name, or the IP in its canonical form.
func (h Host) String() string {
	if h.IP.IsValid() {
		return h.IP.String()
	}
	return h.Name
}

// ErrInvalidHost is wrapped by every ParseHost error.
var ErrInvalidHost = errors.New("invalid destination host")

// ParseHost normalises a destination host as a client may spell it (without
// a port): a bracketed or bare IPv6 literal ("[::1]", "::ffff:127.0.0.1"),
// an IPv4 literal in any of the forms inet_aton and URL parsers accept (one
// to four parts, each decimal, octal with a leading 0 or hexadecimal with
// 0x: "2130706433", "0177.0.0.1", "0x7f.1", "127.1"), or a DNS name
// (lower-cased, one trailing dot removed). A host whose last label is
// numeric must be a valid IPv4 literal, so "1.2.3.256" or "08.1" is an
// error rather than a name to look up. Zones, non-ASCII and empty labels are
// refused.
func ParseHost(s string) (Host, error) {
	if s == "" {
		return Host{}, fmt.Errorf("%w: empty", ErrInvalidHost)
	}
	if len(s) > 255 {
		return Host{}, fmt.Errorf("%w: longer than 255 bytes", ErrInvalidHost)
	}
	if strings.HasPrefix(s, "[") || strings.Contains(s, ":") {
		inner := s
		if strings.HasPrefix(s, "[") {
			if !strings.HasSuffix(s, "]") {
				return Host{}, fmt.Errorf("%w: %q has no closing bracket", ErrInvalidHost, s)
			}
			inner = s[1 : len(s)-1]
		}
		ip, err := netip.ParseAddr(inner)
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return Host{}, fmt.Errorf("%w: %q is not an IPv6 address", ErrInvalidHost, s)
		}
		return Host{IP: ip.Unmap()}, nil
	}
	name := strings.ToLower(strings.TrimSuffix(s, "."))
	if name == "" {
		return Host{}, fmt.Errorf("%w: %q", ErrInvalidHost, s)
	}
	labels := strings.Split(name, ".")
	if numericLabel(labels[len(labels)-1]) {
		ip, err := parseIPv4(labels)
		if err != nil {
			return Host{}, fmt.Errorf("%w: %q: %v", ErrInvalidHost, s, err)
		}
		return Host{IP: ip}, nil
	}
	if len(name) > 253 {
		return Host{}, fmt.Errorf("%w: name longer than 253 bytes", ErrInvalidHost)
	}
	for _, l := range labels {
		if !validLabel(l) {
			return Host{}, fmt.Errorf("%w: %q has an invalid label %q", ErrInvalidHost, s, l)
		}
	}
	return Host{Name: name}, nil
}

// numericLabel reports whether a label is a number as the URL standard's
// "ends in a number" check sees it: decimal digits, or 0x followed by hex
// digits (or nothing).
func numericLabel(l string) bool {
	if l == "" {
		return false
	}
	if strings.HasPrefix(l, "0x") {
		for _, c := range l[2:] {
			if !isHex(c) {
				return false
			}
		}
		return true
	}
	for _, c := range l {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func isHex(c rune) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f'
}

// parseIPv4 parses one to four numeric parts as inet_aton does: every part
// but the last is one byte, the last fills the remaining bytes.
func parseIPv4(parts []string) (netip.Addr, error) {
	if len(parts) > 4 {
		return netip.Addr{}, errors.New("more than four parts")
	}
	var v uint64
	for i, p := range parts {
		n, err := parseIPv4Part(p)
		if err != nil {
			return netip.Addr{}, err
		}
		if i < len(parts)-1 {
			if n > 255 {
				return netip.Addr{}, fmt.Errorf("part %q is over 255", p)
			}
			v = v<<8 | n
			continue
		}
		rest := uint(5 - len(parts)) // bytes the last part fills
		if n >= 1<<(8*rest) {
			return netip.Addr{}, fmt.Errorf("part %q is too large", p)
		}
		v = v<<(8*rest) | n
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), nil
}

func parseIPv4Part(p string) (uint64, error) {
	base, digits := 10, p
	switch {
	case p == "":
		return 0, errors.New("empty part")
	case strings.HasPrefix(p, "0x"):
		base, digits = 16, p[2:]
		if digits == "" {
			return 0, nil // "0x" is zero, as in the URL standard
		}
	case len(p) > 1 && p[0] == '0':
		base, digits = 8, p[1:]
	}
	n, err := strconv.ParseUint(digits, base, 32)
	if err != nil {
		return 0, fmt.Errorf("part %q is not a number", p)
	}
	return n, nil
}

// validLabel accepts the letters, digits, hyphens and underscores of DNS
// names in use (underscore appears in real host names), 1 to 63 bytes.
func validLabel(l string) bool {
	if l == "" || len(l) > 63 {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
