package egress

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseHost(t *testing.T) {
	for in, want := range map[string]string{
		"2130706433":          "127.0.0.1",
		"0177.0.0.1":          "127.0.0.1",
		"0x7f.0.0.1":          "127.0.0.1",
		"0x7f000001":          "127.0.0.1",
		"127.1":               "127.0.0.1",
		"127.0.1":             "127.0.0.1",
		"017700000001":        "127.0.0.1",
		"10.0.0.1.":           "10.0.0.1",
		"0":                   "0.0.0.0",
		"0x":                  "0.0.0.0",
		"[::1]":               "::1",
		"::1":                 "::1",
		"[::ffff:127.0.0.1]":  "127.0.0.1",
		"[::ffff:7f00:1]":     "127.0.0.1",
		"[0:0:0:0:0:0:0:1]":   "::1",
		"169.254.169.254":     "169.254.169.254",
		"0251.0376.0251.0376": "169.254.169.254",
		"[fd00:ec2::254]":     "fd00:ec2::254",
		"Example.COM.":        "example.com",
		"a_b.example.org":     "a_b.example.org",
		"1.example":           "1.example",
		"0x1g":                "0x1g", // a name: its last label is not a number
		"1.0x":                "1.0.0.0",
	} {
		h, err := ParseHost(in)
		if err != nil {
			t.Errorf("ParseHost(%q): %v", in, err)
			continue
		}
		if got := h.String(); got != want {
			t.Errorf("ParseHost(%q) = %s, want %s", in, got, want)
		}
	}
	for _, in := range []string{
		"", "1.2.3.256", "08.1", "0x.09", "1.2.3.4.5", "4294967296", "256.1",
		"[::1", "[fe80::1%eth0]", "fe80::1%25eth0", "[10.0.0.1]", "a..b", "exa mple.com",
		"ex\u00e4mple.com", strings.Repeat("a", 64) + ".com", "a/b",
	} {
		if h, err := ParseHost(in); err == nil {
			t.Errorf("ParseHost(%q) = %v, want an error", in, h)
		} else if !errors.Is(err, ErrInvalidHost) {
			t.Errorf("ParseHost(%q): %v does not wrap ErrInvalidHost", in, err)
		}
	}
}

func TestNames(t *testing.T) {
	var n Names
	for _, p := range []string{"example.com", "*.example.org", "Ads.Example.NET."} {
		if err := n.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]bool{
		"example.com": true, "www.example.com": false, "example.org": false,
		"a.example.org": true, "a.b.example.org": true, "xexample.org": false,
		"ads.example.net": true, "": false,
	} {
		if got := n.Match(name); got != want {
			t.Errorf("Match(%q) = %v, want %v", name, got, want)
		}
	}
	if err := n.Add("10.0.0.1"); err == nil {
		t.Error("an IP was accepted as a name")
	}
	if err := n.Add("*.*.example.com"); err == nil {
		t.Error("a double wildcard was accepted")
	}
}

func TestParseBlockList(t *testing.T) {
	n, err := ParseBlockList(strings.NewReader("# comment\n\nads.example.net\n*.tracker.example  # trailing\n0.0.0.0 a.example b.example\n"), 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ads.example.net", "x.tracker.example", "a.example", "b.example"} {
		if !n.Match(name) {
			t.Errorf("%s not blocked", name)
		}
	}
	if n.Match("tracker.example") || n.Len() != 4 {
		t.Errorf("len %d", n.Len())
	}
	for in, want := range map[string]string{
		"ok.example\nbad..name\n":               "line 2",
		"a.example b.example\n":                 "line 1",
		"a.example\nb.example\nc.example\n":     "more than 2 names",
		strings.Repeat("a", MaxBlockListLine+1): "token too long",
	} {
		if _, err := ParseBlockList(strings.NewReader(in), 2); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseBlockList(%.30q) = %v, want an error containing %q", in, err, want)
		}
	}
}

// staticResolver answers from a map and counts lookups.
type staticResolver struct {
	addrs   map[string][]netip.Addr
	lookups int
}

func (s *staticResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	s.lookups++
	a, ok := s.addrs[host]
	if !ok {
		return nil, errors.New("no such host")
	}
	return a, nil
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

func TestDecide(t *testing.T) {
	r := &staticResolver{addrs: map[string][]netip.Addr{
		"public.example":   addrs("93.184.215.14"),
		"private.example":  addrs("10.1.2.3"),
		"mixed.example":    addrs("93.184.215.14", "10.1.2.3"),
		"mapped.example":   addrs("::ffff:127.0.0.1"),
		"metadata.example": addrs("169.254.169.254"),
		"aws6.example":     addrs("fd00:ec2::254"),
		"nat64.example":    addrs("64:ff9b::a00:1"),
		"cgnat.example":    addrs("100.100.100.200"),
		"denied.example":   addrs("198.51.100.7"),
		"loop.allowed":     addrs("127.0.0.1"),
	}}
	base := func() *Policy {
		p := &Policy{ConnectPorts: []uint16{443}, HTTPPorts: []uint16{80, 443}}
		_ = p.DenyNames.Add("ads.example.net")
		p.DenyPrefixes = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
		return p
	}
	blocked := new(Names)
	_ = blocked.Add("*.blocked.example")
	for _, tc := range []struct {
		name   string
		policy func(*Policy)
		kind   Kind
		host   string
		port   uint16
		want   Rule
		dial   string
	}{
		{"public", nil, Connect, "public.example", 443, RuleNone, "93.184.215.14"},
		{"port 25", nil, Connect, "public.example", 25, RuleConnectPorts, ""},
		{"http port", nil, Absolute, "public.example", 443, RuleNone, "93.184.215.14"},
		{"http port 8080", nil, Absolute, "public.example", 8080, RuleHTTPPorts, ""},
		{"loopback literal", nil, Connect, "127.0.0.1", 443, RulePrivateDestinations, ""},
		{"decimal", nil, Connect, "2130706433", 443, RulePrivateDestinations, ""},
		{"octal", nil, Connect, "0177.1", 443, RulePrivateDestinations, ""},
		{"mapped literal", nil, Connect, "[::ffff:127.0.0.1]", 443, RulePrivateDestinations, ""},
		{"ipv6 loopback", nil, Connect, "[::1]", 443, RulePrivateDestinations, ""},
		{"localhost", nil, Connect, "localhost", 443, RulePrivateDestinations, ""},
		{"sub.localhost", nil, Connect, "a.localhost.", 443, RulePrivateDestinations, ""},
		{"resolves private", nil, Connect, "private.example", 443, RulePrivateDestinations, ""},
		{"one private address", nil, Connect, "mixed.example", 443, RulePrivateDestinations, ""},
		{"resolves mapped", nil, Connect, "mapped.example", 443, RulePrivateDestinations, ""},
		{"metadata", nil, Connect, "169.254.169.254", 443, RulePrivateDestinations, ""},
		{"metadata name", nil, Connect, "metadata.example", 443, RulePrivateDestinations, ""},
		{"aws v6 metadata", nil, Connect, "aws6.example", 443, RulePrivateDestinations, ""},
		{"nat64", nil, Connect, "nat64.example", 443, RulePrivateDestinations, ""},
		{"cgnat", nil, Connect, "cgnat.example", 443, RulePrivateDestinations, ""},
		{"multicast", nil, Connect, "224.0.0.1", 443, RulePrivateDestinations, ""},
		{"deny name", nil, Connect, "ADS.example.net", 443, RuleDenyDestination, ""},
		{"deny range", nil, Connect, "denied.example", 443, RuleDenyDestination, ""},
		{"block list", func(p *Policy) { p.SetBlockList(blocked) }, Connect, "x.blocked.example", 443, RuleBlockList, ""},
		{"unresolved", nil, Connect, "nx.example", 443, RuleUnresolved, ""},
		{"invalid", nil, Connect, "1.2.3.999", 443, RuleInvalidDestination, ""},
		{"allow range loopback", func(p *Policy) { p.AllowPrefixes = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")} }, Connect, "loop.allowed", 443, RuleNone, "127.0.0.1"},
		{"allow range not public", func(p *Policy) { p.AllowPrefixes = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")} }, Connect, "public.example", 443, RuleAllowDestination, ""},
		{"allowed name still not private", func(p *Policy) { _ = p.AllowNames.Add("private.example") }, Connect, "private.example", 443, RulePrivateDestinations, ""},
		{"allowed wildcard", func(p *Policy) { _ = p.AllowNames.Add("*.example") }, Connect, "public.example", 443, RuleNone, "93.184.215.14"},
		{"not in allowed names", func(p *Policy) { _ = p.AllowNames.Add("other.example") }, Connect, "public.example", 443, RuleAllowDestination, ""},
		{"private allowed", func(p *Policy) { p.AllowPrivate = true }, Connect, "private.example", 443, RuleNone, "10.1.2.3"},
		{"deny beats allow", func(p *Policy) { p.AllowPrefixes = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")} }, Connect, "denied.example", 443, RuleDenyDestination, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := base()
			if tc.policy != nil {
				tc.policy(p)
			}
			d := p.Decide(context.Background(), r, tc.kind, tc.host, tc.port)
			if d.Rule != tc.want {
				t.Fatalf("rule %q, want %q (err %v)", d.Rule, tc.want, d.Err)
			}
			if tc.dial != "" && (len(d.Addrs) == 0 || d.Addrs[0].String() != tc.dial) {
				t.Errorf("addrs %v, want %s first", d.Addrs, tc.dial)
			}
			if tc.want != RuleNone && len(d.Addrs) != 0 {
				t.Errorf("refused decision carries addresses %v", d.Addrs)
			}
		})
	}
}

func TestDecideLooksUpOnce(t *testing.T) {
	r := &staticResolver{addrs: map[string][]netip.Addr{"public.example": addrs("93.184.215.14")}}
	p := &Policy{ConnectPorts: []uint16{443}}
	if d := p.Decide(context.Background(), r, Connect, "public.example", 443); !d.Allowed() || r.lookups != 1 {
		t.Fatalf("decision %+v after %d lookups", d, r.lookups)
	}
	// a refused port costs no lookup
	p.Decide(context.Background(), r, Connect, "public.example", 25)
	if r.lookups != 1 {
		t.Errorf("%d lookups", r.lookups)
	}
}

func TestIsPrivate(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "10.0.0.1", "172.31.255.255", "192.168.1.1", "100.64.0.1", "169.254.169.254", "0.0.0.0", "255.255.255.255", "::1", "::", "fe80::1", "fd00:ec2::254", "ff02::1", "::ffff:10.0.0.1", "::127.0.0.1"} {
		if !IsPrivate(netip.MustParseAddr(a)) {
			t.Errorf("%s is not private", a)
		}
	}
	for _, a := range []string{"93.184.215.14", "8.8.8.8", "2606:4700::1111", "203.0.113.5", "172.32.0.1", "100.128.0.1"} {
		if IsPrivate(netip.MustParseAddr(a)) {
			t.Errorf("%s is private", a)
		}
	}
}
