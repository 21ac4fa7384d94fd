package proxyv2_test

import (
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// edgeCaddyfile is an edge on port that proxies to upstream with the
// proxy_v2 transport configured by transport.
func edgeCaddyfile(port int, upstream, transport string) string {
	return fmt.Sprintf(`http://:%d {
	bind 127.0.0.1
	reverse_proxy %s {
		transport proxy_v2 {
			%s
		}
	}
}
`, port, upstream, transport)
}

func TestHAProxyReceivesRampartV2(t *testing.T) {
	hp := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	harness.StartHAProxy(t, hp, fmt.Sprintf(`frontend fe
  mode http
  bind %s accept-proxy
  http-request return status 200 content-type text/plain lf-string "authority=%%[fc_pp_authority] uid=%%[fc_pp_unique_id] src=%%[src] dst=%%[dst]:%%[dst_port]"
`, hp))
	port := harness.FreePort(t)
	harness.RunCaddyfile(t, edgeCaddyfile(port, hp, "tlv authority {host}\n\t\t\ttlv unique_id {http.request.uuid}\n\t\t\tcrc32c\n\t\t\tkeepalive_idle_conns 4"))
	edge := fmt.Sprintf("127.0.0.1:%d", port)
	harness.WaitListening(t, edge, 5*time.Second)
	seen := map[string]bool{}
	for i := range 3 {
		_, body, err := request(dialFrom(t, "127.0.0.6", edge), nil, "shop.example")
		if err != nil {
			t.Fatal(err)
		}
		f := fields(body)
		if f["authority"] != "shop.example" || f["src"] != "127.0.0.6" || f["dst"] != edge || len(f["uid"]) != 36 {
			t.Errorf("request %d: HAProxy saw %q", i, body)
		}
		if seen[f["uid"]] {
			t.Errorf("unique id %s repeated", f["uid"])
		}
		seen[f["uid"]] = true
	}
}

func TestNginxReceivesRampartV2(t *testing.T) {
	np := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	harness.StartNginx(t, np, fmt.Sprintf(`server {
  listen %s proxy_protocol;
  location / { return 200 "ppaddr=$proxy_protocol_addr ppport=$proxy_protocol_port"; }
}`, np), "")
	port := harness.FreePort(t)
	harness.RunCaddyfile(t, edgeCaddyfile(port, np, "tlv authority {host}\n\t\t\tcrc32c"))
	edge := fmt.Sprintf("127.0.0.1:%d", port)
	harness.WaitListening(t, edge, 5*time.Second)
	conn := dialFrom(t, "127.0.0.8", edge)
	_, body, err := request(conn, nil, "a.test")
	if err != nil {
		t.Fatal(err)
	}
	f := fields(body)
	wantPort := conn.LocalAddr().String()[strings.LastIndexByte(conn.LocalAddr().String(), ':')+1:]
	if f["ppaddr"] != "127.0.0.8" || f["ppport"] != wantPort {
		t.Errorf("nginx saw %q, want ppaddr=127.0.0.8 ppport=%s", body, wantPort)
	}
}

// TestTransportIntoRampartListener chains two Rampart hops: an edge with
// the proxy_v2 transport in front of an origin Caddy with the proxy_v2
// listener wrapper, which sees the first client's address and TLVs.
func TestTransportIntoRampartListener(t *testing.T) {
	originPort := harness.FreePort(t)
	edgePort := harness.FreePort(t)
	logFile := t.TempDir() + "/access.log"
	cfg := listenerCaddyfile(originPort, "trust 127.0.0.1/32\n\t\t\t\tuntrusted plain\n\t\t\t\trequire_crc", logFile) +
		fmt.Sprintf(`http://:%d {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:%d {
		transport proxy_v2 {
			tlv authority {host}
			tlv 0xE5 {remote_host}
			crc32c
		}
	}
}
`, edgePort, originPort)
	harness.RunCaddyfile(t, cfg)
	edge := fmt.Sprintf("127.0.0.1:%d", edgePort)
	harness.WaitListening(t, edge, 5*time.Second)
	_, body, err := request(dialFrom(t, "127.0.0.4", edge), nil, "chain.test")
	if err != nil {
		t.Fatal(err)
	}
	f := fields(body)
	if f["remote"] != "127.0.0.4" || f["authority"] != "chain.test" || f["e5"] != "127.0.0.4" || f["dst"] != edge {
		t.Errorf("origin saw %q", body)
	}
}

// TestTransportSSLTLV terminates TLS at the edge and checks that the origin
// receives the client's TLS version and cipher in the SSL TLV.
func TestTransportSSLTLV(t *testing.T) {
	originPort := harness.FreePort(t)
	edgePort := harness.FreePort(t)
	cfg := listenerCaddyfile(originPort, "trust 127.0.0.1/32\n\t\t\t\tuntrusted plain", t.TempDir()+"/access.log") +
		fmt.Sprintf(`https://localhost:%d {
	tls internal
	reverse_proxy 127.0.0.1:%d {
		transport proxy_v2 {
			ssl
		}
	}
}
`, edgePort, originPort)
	harness.RunCaddyfile(t, cfg)
	edge := fmt.Sprintf("127.0.0.1:%d", edgePort)
	harness.WaitListening(t, edge, 5*time.Second)
	conf := &tls.Config{ServerName: "localhost", InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}
	// the internal CA issues the site certificate in the background
	var tc *tls.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		tc = tls.Client(dialFrom(t, "127.0.0.10", edge), conf)
		err := tc.Handshake()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("TLS handshake with the edge: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, body, err := request(tc, nil, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	f := fields(body)
	if f["remote"] != "127.0.0.10" || f["sslv"] != "TLSv1.2" || f["verified"] != "false" ||
		!strings.Contains(body, "cipher=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256") {
		t.Errorf("origin saw %q", body)
	}
	if !strings.Contains(body, "cn= ") {
		t.Errorf("a client without a certificate has a CN: %q", body)
	}
}

// TestTransportHealthChecksSendLOCAL runs reverse_proxy's active health
// checks through the proxy_v2 transport into a Rampart listener that
// requires headers: each check carries a LOCAL header (no client to
// name), so the upstream counts local headers and stays healthy. With
// keep-alive off, every check opens a connection and sends a header.
func TestTransportHealthChecksSendLOCAL(t *testing.T) {
	originPort := harness.FreePort(t)
	edgePort := harness.FreePort(t)
	cfg := listenerCaddyfile(originPort, "trust 127.0.0.1/32\n\t\t\t\tuntrusted plain", t.TempDir()+"/access.log") +
		fmt.Sprintf(`http://:%d {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:%d {
		health_uri /
		health_interval 100ms
		transport proxy_v2 {
			keepalive off
		}
	}
}
`, edgePort, originPort)
	c := harness.RunCaddyfile(t, cfg)
	before := headerCounts(t, c)["local"]
	waitCount(t, c, "local", before+3)
	edge := fmt.Sprintf("127.0.0.1:%d", edgePort)
	if _, body, err := request(dialFrom(t, "127.0.0.11", edge), nil, "x"); err != nil || fields(body)["remote"] != "127.0.0.11" {
		t.Errorf("request after health checks: %v %q", err, body)
	}
}
