package egress

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func BenchmarkParseHost(b *testing.B) {
	for _, host := range []string{"www.example.com", "2130706433", "[::ffff:127.0.0.1]"} {
		b.Run(host, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseHost(host); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecide is the per-request policy cost with a 100 000-name block
// list and a resolver that answers at once.
func BenchmarkDecide(b *testing.B) {
	var list strings.Builder
	for i := range 100_000 {
		fmt.Fprintf(&list, "ads%d.example.net\n", i)
	}
	blocked, err := ParseBlockList(strings.NewReader(list.String()), 200_000)
	if err != nil {
		b.Fatal(err)
	}
	p := &Policy{ConnectPorts: []uint16{443}, HTTPPorts: []uint16{80, 443}}
	_ = p.DenyNames.Add("*.ads.example")
	p.SetBlockList(blocked)
	r := &staticResolver{addrs: map[string][]netip.Addr{"a.b.www.example.com": addrs("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")}}
	for _, host := range []string{"a.b.www.example.com", "93.184.215.14", "ads5.example.net"} {
		b.Run(host, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Decide(context.Background(), r, Connect, host, 443)
			}
		})
	}
}

func BenchmarkParseBlockList(b *testing.B) {
	var list strings.Builder
	for i := range 10_000 {
		fmt.Fprintf(&list, "0.0.0.0 ads%d.example.net\n", i)
	}
	text := list.String()
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseBlockList(strings.NewReader(text), 20_000); err != nil {
			b.Fatal(err)
		}
	}
}
