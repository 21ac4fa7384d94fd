package egress

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzParseHost checks that every accepted host is normalised: parsing its
// canonical form gives the same host, and an IP literal is never returned
// as a name (which would skip the address checks).
func FuzzParseHost(f *testing.F) {
	for _, s := range []string{"2130706433", "0177.0.0.1", "0x7f.1", "[::ffff:127.0.0.1]", "::1", "Example.COM.", "1.2.3.256", "[fe80::1%eth0]", "a..b", "0x", "08"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseHost(s)
		if err != nil {
			return
		}
		if h.IP.IsValid() == (h.Name != "") {
			t.Fatalf("ParseHost(%q) = %+v: exactly one of IP and Name must be set", s, h)
		}
		if h.Name != "" {
			if _, err := netip.ParseAddr(h.Name); err == nil {
				t.Fatalf("ParseHost(%q) returned the IP %q as a name", s, h.Name)
			}
			if h.Name != strings.ToLower(h.Name) {
				t.Fatalf("name %q not lower-case", h.Name)
			}
		}
		if h.IP.Is4In6() {
			t.Fatalf("ParseHost(%q) = %v: mapped address not unmapped", s, h.IP)
		}
		again, err := ParseHost(h.String())
		if h.IP.Is6() {
			again, err = ParseHost("[" + h.String() + "]")
		}
		if err != nil || again != h {
			t.Fatalf("canonical form %q of %q parses as %+v, %v", h.String(), s, again, err)
		}
	})
}

// FuzzParseBlockList checks that a parsed block list matches every name it
// was given and that bad input is an error, never a panic.
func FuzzParseBlockList(f *testing.F) {
	f.Add("ads.example.net\n*.tracker.example # c\n0.0.0.0 a.example b.example\n")
	f.Add("bad..name\n")
	f.Add("127.0.0.1 localhost\n::1 ip6-localhost\n")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseBlockList(strings.NewReader(s), 1000)
		if err != nil {
			return
		}
		for _, line := range strings.Split(s, "\n") {
			text, _, _ := strings.Cut(line, "#")
			fields := strings.Fields(text)
			if len(fields) == 1 {
				name, wildcard, err := ParseNamePattern(fields[0])
				if err != nil {
					t.Fatalf("accepted list has a bad name %q: %v", fields[0], err)
				}
				if wildcard {
					name = "x." + name
				}
				if !n.Match(name) {
					t.Fatalf("%q listed but %q not matched", fields[0], name)
				}
			}
		}
	})
}
