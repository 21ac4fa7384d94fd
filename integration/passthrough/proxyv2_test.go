package passthrough_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

// TestProxyV2 checks the PROXY v2 header a passthrough route sends, with
// two independent receivers: HAProxy 2.6 (accept-proxy, logging src and
// fc_pp_authority) in front of a TLS backend, and the proxy_v2 wire parser
// on a bare socket (source address, AUTHORITY and ALPN TLVs, CRC32C).
func TestProxyV2(t *testing.T) {
	tlsBackend := startBackend(t, "behind-haproxy", "")
	hp := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	haproxy := harness.StartHAProxy(t, hp, fmt.Sprintf(`frontend fe
  mode tcp
  bind %s accept-proxy
  log-format "PPCHECK src=%%[src] authority=%%[fc_pp_authority]"
  option logasap
  default_backend be

backend be
  mode tcp
  server s1 %s
`, hp, tlsBackend.addr))

	// a bare receiver that parses the header with the wire package
	rawAddr, headers := headerReceiver(t)

	e := startEdge(t, fmt.Sprintf(`passthrough {
		pass.test %s {
			proxy_protocol v2
		}
		api-1.test %s {
			proxy_protocol v2 authority alpn crc32c
		}
	}`, hp, rawAddr))

	s, err := openSession(e.https, "pass.test")
	if err != nil {
		t.Fatalf("through HAProxy: %v\n%s", err, haproxy.Output())
	}
	if s.backend != "behind-haproxy" {
		t.Fatalf("reached %q", s.backend)
	}
	if err := s.echo("via haproxy"); err != nil {
		t.Fatal(err)
	}
	s.conn.Close()
	eventually(t, 5*time.Second, "HAProxy log line", func() error {
		out := haproxy.Output()
		if !strings.Contains(out, "PPCHECK src=127.0.0.1 authority=pass.test") {
			return fmt.Errorf("HAProxy did not log the client address and SNI from the header:\n%s", out)
		}
		return nil
	})

	c, err := net.DialTimeout("tcp", e.https, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, &tls.Config{ServerName: "api-1.test", NextProtos: []string{"h2", "http/1.1"}, InsecureSkipVerify: true})
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	go func() { _ = tc.Handshake() }()
	h := nextHeader(t, headers)
	if h.Version != 2 || h.Command != wire.CommandProxy {
		t.Fatalf("header %+v", h)
	}
	if h.Source.String() != c.LocalAddr().String() {
		t.Fatalf("source %s, want the client's %s", h.Source, c.LocalAddr())
	}
	if h.Destination.String() != e.https {
		t.Fatalf("destination %s, want %s", h.Destination, e.https)
	}
	if v, ok := h.TLV(wire.TLVAuthority); !ok || string(v) != "api-1.test" {
		t.Fatalf("AUTHORITY TLV %q %v", v, ok)
	}
	if v, ok := h.TLV(wire.TLVALPN); !ok || string(v) != "h2" {
		t.Fatalf("ALPN TLV %q %v", v, ok)
	}
	if !h.HasCRC() {
		t.Fatal("no CRC32C TLV although crc32c was asked for")
	}
}
