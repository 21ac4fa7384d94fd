package passthrough_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

// prefixConn sends a PROXY header in the same write as the first bytes of
// the connection (the TLS ClientHello), as an L4 load balancer may.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Write(p []byte) (int, error) {
	if c.prefix != nil {
		buf := append(c.prefix, p...)
		c.prefix = nil
		n, err := c.Conn.Write(buf)
		return max(n-(len(buf)-len(p)), 0), err
	}
	return c.Conn.Write(p)
}

// dialBehindLB connects as if through a load balancer that announces
// client as the source.
func dialBehindLB(t *testing.T, edgeAddr, sni, client string) *tls.Conn {
	t.Helper()
	raw, err := net.DialTimeout("tcp", edgeAddr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h := wire.Header{Version: 2, Command: wire.CommandProxy, Transport: wire.TransportStream,
		Source: netip.MustParseAddrPort(client), Destination: netip.MustParseAddrPort(edgeAddr)}
	hdr, err := h.AppendV2(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(&prefixConn{Conn: raw, prefix: hdr}, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// TestComposeWithProxyV2: the proxy_v2 listener wrapper runs before the
// passthrough routes. A PROXY v2 header that arrives in the same segment as
// the ClientHello is read, the passthrough backend receives the original
// client's address in its own PROXY header, and the terminated site sees
// the same client, with the header's fields as placeholders.
func TestComposeWithProxyV2(t *testing.T) {
	for _, mod := range []string{"caddy.listeners.proxy_v2", "http.handlers.proxy_v2_vars"} {
		if _, err := caddy.GetModule(mod); err != nil {
			t.Skipf("%s is not registered in this build", mod)
		}
	}
	rawAddr, headers := headerReceiver(t)
	edgeT := startEdgeWith(t, fmt.Sprintf(`passthrough {
		listener_wrappers {
			proxy_v2 {
				trust 127.0.0.1/32
			}
		}
		pass.test %s {
			proxy_protocol v2
		}
	}`, rawAddr), `site.test {
	proxy_v2_vars
	respond "client {remote_host} header {http.request.proxy.src}"
}`)

	c := dialBehindLB(t, edgeT.https, "pass.test", "203.0.113.7:4242")
	go func() { _ = c.Handshake() }()
	h := nextHeader(t, headers)
	c.Close()
	if h.Source.String() != "203.0.113.7:4242" {
		t.Fatalf("passthrough backend got source %s, want the client from the load balancer's header", h.Source)
	}
	if v, _ := h.TLV(wire.TLVAuthority); string(v) != "pass.test" {
		t.Fatalf("AUTHORITY %q", v)
	}

	eventually(t, 15*time.Second, "terminated site behind the load balancer", func() error {
		c := dialBehindLB(t, edgeT.https, "site.test", "203.0.113.9:5555")
		defer c.Close()
		if err := c.Handshake(); err != nil {
			return err
		}
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
		body, _ := io.ReadAll(c)
		if !strings.Contains(string(body), "client 203.0.113.9 header 203.0.113.9:5555") {
			return fmt.Errorf("site.test answered %q", body)
		}
		return nil
	})
}
