package netaddr

import (
	"net"
	"net/netip"
	"testing"
)

type stringAddr string

func (s stringAddr) Network() string { return "test" }
func (s stringAddr) String() string  { return string(s) }

func TestAddrPort(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string
		ok   bool
	}{
		{&net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 80}, "10.0.0.1:80", true},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.1"), Port: 80}, "10.0.0.1:80", true},
		{&net.UDPAddr{IP: net.ParseIP("::1"), Port: 53}, "[::1]:53", true},
		{stringAddr("[::ffff:127.0.0.1]:9"), "127.0.0.1:9", true},
		{stringAddr("/run/caddy.sock"), "", false},
		{nil, "", false},
		{(*net.TCPAddr)(nil), "", false},
	} {
		ap, ok := AddrPort(tc.addr)
		if ok != tc.ok || (ok && ap.String() != tc.want) {
			t.Errorf("AddrPort(%v) = %v, %v; want %s, %v", tc.addr, ap, ok, tc.want, tc.ok)
		}
	}
}

func TestHostIP(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:1234":          "10.0.0.1",
		"[::ffff:10.0.0.1]:1234": "10.0.0.1",
		"::1":                    "::1",
		"192.0.2.7":              "192.0.2.7",
	} {
		ip, ok := HostIP(in)
		if !ok || ip.String() != want {
			t.Errorf("HostIP(%q) = %v, %v; want %s", in, ip, ok, want)
		}
	}
	if _, ok := HostIP("@"); ok {
		t.Error("HostIP(@) parsed")
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes([]string{"10.1.2.3/8", "192.0.2.1", "::ffff:10.0.0.0/104", "fd00::1/64"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.0.2.1/32", "10.0.0.0/8", "fd00::/64"}
	for i, p := range got {
		if p.String() != want[i] {
			t.Errorf("prefix %d = %s, want %s", i, p, want[i])
		}
	}
	if !Contains(got, netip.MustParseAddr("::ffff:10.9.9.9")) || Contains(got, netip.MustParseAddr("11.0.0.1")) {
		t.Error("Contains is wrong")
	}
	if _, err := ParsePrefixes([]string{"10.0.0.0/33"}); err == nil || err.Error() != `"10.0.0.0/33" is not an IP address or CIDR range` {
		t.Errorf("bad range error = %v", err)
	}
}
