package proxyv2_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

// prefixConn sends prefix together with the first write, so that a PROXY
// header and a TLS ClientHello leave in one segment.
type prefixConn struct {
	net.Conn
	once   sync.Once
	prefix []byte
}

func (c *prefixConn) Write(p []byte) (int, error) {
	sent := false
	var n int
	var err error
	c.once.Do(func() {
		sent = true
		_, err = c.Conn.Write(append(append([]byte(nil), c.prefix...), p...))
		n = len(p)
	})
	if sent {
		return n, err
	}
	return c.Conn.Write(p)
}

// tlsBackend is a TLS server that greets every client that completes a
// handshake for back.test.
func tlsBackend(t *testing.T, p *pki, ip string) string {
	t.Helper()
	ln, err := tls.Listen("tcp", ip+":0", &tls.Config{Certificates: []tls.Certificate{p.serverCert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go harness.ServeEach(ln, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := c.(*tls.Conn).Handshake(); err == nil {
			_, _ = io.WriteString(c, "hello from back.test\n")
		}
	})
	return ln.Addr().String()
}

// TestLayer4HeaderAndClientHelloInOneWrite sends a PROXY v2 header and a
// TLS ClientHello in a single write through a layer4 route whose inner
// matchers need both the client's address and the SNI, with and without a
// prefetching matcher in front of proxy_v2 (caddy-l4's own handler drops
// such connections after a prefetching matcher).
func TestLayer4HeaderAndClientHelloInOneWrite(t *testing.T) {
	p := newPKI(t, "back.test", "client")
	backend := tlsBackend(t, p, "127.0.0.1")
	inner := fmt.Sprintf(`subroute {
					@client {
						remote_ip 203.0.113.0/24
						tls sni back.test
					}
					route @client {
						proxy %s
					}
				}`, backend)
	variants := map[string]string{
		"after a prefetching matcher": `@pp proxy_protocol
			route @pp {
				proxy_v2 {
					trust 127.0.0.1/32
				}
				%s
			}`,
		"without a matcher": `route {
				proxy_v2 {
					trust 127.0.0.1/32
				}
				%s
			}`,
	}
	for name, routes := range variants {
		t.Run(name, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
			harness.RunCaddyfile(t, fmt.Sprintf("{\n\tlayer4 {\n\t\t%s {\n\t\t\t%s\n\t\t}\n\t}\n}\n", addr, fmt.Sprintf(routes, inner)))
			harness.WaitListening(t, addr, 5*time.Second)
			for i := range 3 {
				raw := dialFrom(t, "127.0.0.1", addr)
				hdr := v2Header(t, fmt.Sprintf("203.0.113.%d:5000", 10+i), "198.51.100.1:443", true)
				tc := tls.Client(&prefixConn{Conn: raw, prefix: hdr}, &tls.Config{ServerName: "back.test", RootCAs: p.pool})
				if err := tc.Handshake(); err != nil {
					t.Fatalf("connection %d: handshake through layer4 failed: %v", i, err)
				}
				greeting, err := io.ReadAll(tc)
				if err != nil || string(greeting) != "hello from back.test\n" {
					t.Fatalf("connection %d: got %q, %v", i, greeting, err)
				}
			}
			// a client outside 203.0.113.0/24 does not match the inner route
			raw := dialFrom(t, "127.0.0.1", addr)
			tc := tls.Client(&prefixConn{Conn: raw, prefix: v2Header(t, "192.0.2.1:5000", "198.51.100.1:443", false)},
				&tls.Config{ServerName: "back.test", RootCAs: p.pool})
			if err := tc.Handshake(); err == nil {
				t.Errorf("a client outside the remote_ip range reached the backend")
			}
		})
	}
}

// TestLayer4DropsBadHeader checks that a bad header drops only its own
// connection on a layer4 route, and that {l4.proxy.*} placeholders work:
// the upstream's host comes from the AUTHORITY TLV.
func TestLayer4DropsBadHeader(t *testing.T) {
	p := newPKI(t, "back.test", "client")
	// the backend listens on 127.0.0.3 only: an empty placeholder would dial 127.0.0.1
	backend := tlsBackend(t, p, "127.0.0.3")
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	layer4 {
		%s {
			route {
				proxy_v2 {
					trust 127.0.0.1/32
					timeout 300ms
				}
				proxy {l4.proxy.authority}:%s
			}
		}
	}
}
`, addr, backend[strings.LastIndexByte(backend, ':')+1:]))
	harness.WaitListening(t, addr, 5*time.Second)
	good := v2Header(t, "203.0.113.7:1", "198.51.100.1:443", true, wire.TLV{Type: wire.TLVAuthority, Value: []byte("127.0.0.3")})
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 1
	before := headerCounts(t, c)["bad_crc"]
	conn := dialFrom(t, "127.0.0.1", addr)
	_, _ = conn.Write(bad)
	expectDropped(t, conn, "wrong CRC on layer4")
	waitCount(t, c, "bad_crc", before+1)
	raw := dialFrom(t, "127.0.0.1", addr)
	tc := tls.Client(&prefixConn{Conn: raw, prefix: good}, &tls.Config{ServerName: "back.test", RootCAs: p.pool})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("good connection after a bad one: %v", err)
	}
}
