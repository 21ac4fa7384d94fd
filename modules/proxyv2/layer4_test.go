package proxyv2

import (
	"context"
	"net/netip"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/mholt/caddy-l4/layer4"
	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

// TestLayer4PeerPlaceholder runs the layer4 handler on a real loopback
// connection wrapped as caddy-l4's server wraps it: later handlers see the
// client from the header as the connection's address, and the load
// balancer's socket address as {l4.proxy.peer}.
func TestLayer4PeerPlaceholder(t *testing.T) {
	lb, server := loopbackPair(t)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := Handler{Policy: Policy{Trust: []string{"127.0.0.1"}}}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	hdr := wire.Header{Command: wire.CommandProxy, Source: netip.MustParseAddrPort("203.0.113.7:1234"),
		Destination: netip.MustParseAddrPort("198.51.100.1:443")}
	b, err := hdr.AppendV2(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lb.Write(append(b, "hello"...)); err != nil {
		t.Fatal(err)
	}
	cx := layer4.WrapConnection(server, make([]byte, 0, 4096), zap.NewNop())
	var seen, payload string
	err = h.Handle(cx, layer4.HandlerFunc(func(cx *layer4.Connection) error {
		repl := cx.Context.Value(layer4.ReplacerCtxKey).(*caddy.Replacer)
		seen = repl.ReplaceAll("{l4.proxy.peer} {l4.proxy.src} {l4.conn.remote_addr} "+cx.RemoteAddr().String(), "")
		buf := make([]byte, 5)
		n, _ := cx.Read(buf)
		payload = string(buf[:n])
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if want := lb.LocalAddr().String() + " 203.0.113.7:1234 203.0.113.7:1234 203.0.113.7:1234"; seen != want {
		t.Errorf("placeholders %q, want %q", seen, want)
	}
	if payload != "hello" {
		t.Errorf("payload after the header %q", payload)
	}
}
