package table

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Key is a table key. Build it with the table's key functions (KeyFrom,
// KeyFromAddr, KeyFromInt, ParseKey); it is a comparable value that never
// allocates for ip and integer tables.
type Key struct {
	b [16]byte // ip (IPv4-mapped IPv6) and integer keys
	s string   // string and binary keys
}

// KeyFromAddr builds the key of an address, applying the table's prefix
// grouping. It fails only on the zero Addr or a non-ip table.
func (s *Schema) KeyFromAddr(a netip.Addr) (Key, error) {
	if s.Type != KeyIP && s.Type != KeyIPv6 {
		return Key{}, fmt.Errorf("a %s table has no address keys", s.Type)
	}
	if !a.IsValid() {
		return Key{}, fmt.Errorf("invalid address")
	}
	a = a.Unmap().WithZone("")
	if a.Is4() && s.IPv4Prefix > 0 && s.IPv4Prefix < 32 {
		a = netip.PrefixFrom(a, s.IPv4Prefix).Masked().Addr()
	} else if a.Is6() && s.IPv6Prefix > 0 && s.IPv6Prefix < 128 {
		a = netip.PrefixFrom(a, s.IPv6Prefix).Masked().Addr()
	}
	return Key{b: a.As16()}, nil
}

// KeyFromInt builds the key of an integer table.
func (s *Schema) KeyFromInt(n int64) Key {
	var k Key
	binary.BigEndian.PutUint64(k.b[8:], uint64(n))
	return k
}

// KeyFrom builds a key from traffic data: an address (with optional port or
// brackets) for ip tables, a decimal for integer tables, the raw bytes for
// string and binary tables (truncated to the key length; binary keys are
// zero-padded as in HAProxy).
func (s *Schema) KeyFrom(v string) (Key, error) {
	switch s.Type {
	case KeyIP, KeyIPv6:
		a, err := parseAddr(v)
		if err != nil {
			return Key{}, err
		}
		return s.KeyFromAddr(a)
	case KeyInteger:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return Key{}, fmt.Errorf("key %q is not an integer", v)
		}
		return s.KeyFromInt(n), nil
	case KeyString:
		if v == "" {
			return Key{}, fmt.Errorf("empty key")
		}
		return Key{s: cutText(v, s.KeyLen)}, nil
	default: // binary
		if v == "" {
			return Key{}, fmt.Errorf("empty key")
		}
		if len(v) > s.KeyLen {
			v = v[:s.KeyLen]
		} else if len(v) < s.KeyLen {
			v += strings.Repeat("\x00", s.KeyLen-len(v))
		}
		return Key{s: v}, nil
	}
}

// ParseKey parses the text form of a key (what FormatKey prints and the
// admin API takes): an address or prefix, a decimal, a string, or hex for
// binary tables.
func (s *Schema) ParseKey(text string) (Key, error) {
	switch s.Type {
	case KeyIP, KeyIPv6:
		if p, err := netip.ParsePrefix(text); err == nil {
			return s.KeyFromAddr(p.Addr())
		}
	case KeyBinary:
		raw, err := hex.DecodeString(text)
		if err != nil {
			return Key{}, fmt.Errorf("binary key %q is not hex", text)
		}
		return s.KeyFrom(string(raw))
	}
	return s.KeyFrom(text)
}

// cutText cuts a string key to at most n bytes. HAProxy cuts at the byte;
// a cut inside a UTF-8 character would leave a key that prints as an
// invalid character, so the cut moves back to the character's first byte
// (a key that is not UTF-8 there is cut at the byte, as HAProxy does).
func cutText(v string, n int) string {
	if len(v) <= n {
		return v
	}
	for i := n; i > 0 && i > n-utf8.UTFMax; i-- {
		if utf8.RuneStart(v[i]) {
			if r, size := utf8.DecodeRuneInString(v[i:]); r != utf8.RuneError && i+size > n {
				return v[:i]
			}
			break
		}
	}
	return v[:n]
}

func parseAddr(v string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(v); err == nil {
		return a, nil
	}
	if ap, err := netip.ParseAddrPort(v); err == nil {
		return ap.Addr(), nil
	}
	if strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]") {
		if a, err := netip.ParseAddr(v[1 : len(v)-1]); err == nil {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("key %q is not an IP address", v)
}

// FormatKey prints a key: the address (with /prefix when grouped), the
// decimal, the string, or hex for binary keys.
func (s *Schema) FormatKey(k Key) string {
	switch s.Type {
	case KeyIP, KeyIPv6:
		a := netip.AddrFrom16(k.b).Unmap()
		if a.Is4() && s.IPv4Prefix > 0 && s.IPv4Prefix < 32 {
			return netip.PrefixFrom(a, s.IPv4Prefix).String()
		}
		if a.Is6() && s.IPv6Prefix > 0 && s.IPv6Prefix < 128 {
			return netip.PrefixFrom(a, s.IPv6Prefix).String()
		}
		return a.String()
	case KeyInteger:
		return strconv.FormatInt(int64(binary.BigEndian.Uint64(k.b[8:])), 10)
	case KeyBinary:
		return hex.EncodeToString([]byte(k.s))
	}
	return k.s
}
