package proxyv2_test

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

// echoBody is a response that shows what Caddy believes about the client.
const echoBody = `remote={remote_host} client={client_ip} v={http.request.proxy.version} cmd={http.request.proxy.command} ` +
	`src={http.request.proxy.src} dst={http.request.proxy.dst} authority={http.request.proxy.authority} ` +
	`uid={http.request.proxy.unique_id} alpn={http.request.proxy.alpn} cn={http.request.proxy.ssl.cn} ` +
	`sslv={http.request.proxy.ssl.version} cipher={http.request.proxy.ssl.cipher} verified={http.request.proxy.ssl.verified} ` +
	`aws={http.request.proxy.aws.vpce_id} gcp={http.request.proxy.gcp.psc_id} azure={http.request.proxy.azure.link_id} ` +
	`ali={http.request.proxy.alibaba.vpc_id} e5={http.request.proxy.tlv.0xE5} xuid={header.X-Unique-ID} ` +
	`peer={http.request.proxy.peer}`

// listenerCaddyfile serves echoBody on port behind the proxy_v2 listener
// wrapper; 127.0.0.1 is the trusted load balancer, other loopback
// addresses are untrusted clients.
func listenerCaddyfile(port int, policy, logFile string) string {
	return fmt.Sprintf(`{
	servers {
		listener_wrappers {
			proxy_v2 {
				%s
			}
			tls
		}
	}
}
http://:%d {
	bind 127.0.0.1
	proxy_v2_vars
	log {
		output file %s
		format json
	}
	@client remote_ip 203.0.113.0/24 2001:db8::/32
	header @client X-Matched remote_ip
	respond "%s"
}
`, policy, port, logFile, strings.ReplaceAll(echoBody, `"`, `\"`))
}

const defaultPolicy = `trust 127.0.0.1/32 127.0.0.9/32
				untrusted plain
				timeout 400ms
				max_header 512`

func startListener(t *testing.T, policy string) (*harness.Caddy, string, string) {
	t.Helper()
	port := harness.FreePort(t)
	logFile := t.TempDir() + "/access.log"
	c := harness.RunCaddyfile(t, listenerCaddyfile(port, policy, logFile))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	harness.WaitListening(t, addr, 5*time.Second)
	return c, addr, logFile
}

func TestListenerAppliesHeaders(t *testing.T) {
	_, addr, logFile := startListener(t, defaultPolicy)

	t.Run("v2 with TLVs", func(t *testing.T) {
		gcp := make([]byte, 8)
		binary.BigEndian.PutUint64(gcp, 77)
		hdr := v2Header(t, "203.0.113.7:40000", "198.51.100.1:443", true,
			wire.TLV{Type: wire.TLVAuthority, Value: []byte("shop.example")},
			wire.TLV{Type: wire.TLVUniqueID, Value: []byte("req-42")},
			wire.TLV{Type: wire.TLVALPN, Value: []byte("h2")},
			wire.TLV{Type: wire.TLVAWS, Value: append([]byte{wire.AWSSubVPCEndpointID}, "vpce-1"...)},
			wire.TLV{Type: wire.TLVGCP, Value: gcp},
			wire.TLV{Type: wire.TLVAlibaba, Value: append([]byte{wire.AlibabaSubVPCID}, "vpc-9"...)},
			wire.TLV{Type: 0xE5, Value: []byte{0xde, 0xad}},
			wire.TLV{Type: wire.TLVSSL, Value: wire.EncodeSSL(wire.SSL{Client: wire.SSLClientSSL | wire.SSLClientCertConn, CN: "alice", Version: "TLSv1.3"})})
		resp, body, err := request(dialFrom(t, "127.0.0.1", addr), hdr, "shop.example")
		if err != nil {
			t.Fatal(err)
		}
		f := fields(body)
		want := map[string]string{"remote": "203.0.113.7", "client": "203.0.113.7", "v": "2", "cmd": "PROXY",
			"src": "203.0.113.7:40000", "dst": "198.51.100.1:443", "authority": "shop.example", "uid": "req-42",
			"alpn": "h2", "cn": "alice", "sslv": "TLSv1.3", "verified": "true", "aws": "vpce-1", "gcp": "77", "ali": "vpc-9", "e5": "0xdead"}
		for k, v := range want {
			if f[k] != v {
				t.Errorf("%s = %q, want %q (body %q)", k, f[k], v, body)
			}
		}
		if resp.Header.Get("X-Matched") != "remote_ip" {
			t.Errorf("remote_ip matcher did not see the client address")
		}
	})

	t.Run("v1 IPv6", func(t *testing.T) {
		_, body, err := request(dialFrom(t, "127.0.0.1", addr), []byte("PROXY TCP6 2001:db8::5 2001:db8::1 5555 443\r\n"), "x")
		if err != nil {
			t.Fatal(err)
		}
		if f := fields(body); f["remote"] != "2001:db8::5" || f["v"] != "1" || f["src"] != "[2001:db8::5]:5555" {
			t.Errorf("body %q", body)
		}
	})

	t.Run("LOCAL is served with the socket address", func(t *testing.T) {
		h := wire.Header{Command: wire.CommandLocal}
		hdr, _ := h.AppendV2(nil, false)
		_, body, err := request(dialFrom(t, "127.0.0.1", addr), hdr, "x")
		if err != nil {
			t.Fatal(err)
		}
		if f := fields(body); f["remote"] != "127.0.0.1" || f["cmd"] != "LOCAL" {
			t.Errorf("body %q", body)
		}
	})

	t.Run("untrusted plain client keeps its own address", func(t *testing.T) {
		conn := dialFrom(t, "127.0.0.2", addr)
		_, body, err := request(conn, nil, "x")
		if err != nil {
			t.Fatal(err)
		}
		if f := fields(body); f["remote"] != "127.0.0.2" || f["v"] != "" || f["peer"] != conn.LocalAddr().String() {
			t.Errorf("body %q; want peer %s", body, conn.LocalAddr())
		}
	})

	t.Run("access log has the client", func(t *testing.T) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			data, _ := os.ReadFile(logFile)
			if bytes.Contains(data, []byte(`"remote_ip":"203.0.113.7"`)) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("access log lacks the client address:\n%s", data)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

func TestListenerDropsBadInput(t *testing.T) {
	c, addr, _ := startListener(t, defaultPolicy)
	good := v2Header(t, "203.0.113.7:1", "198.51.100.1:443", true)
	badCRC := append([]byte(nil), good...)
	badCRC[len(badCRC)-1] ^= 0xff
	oversized := v2Header(t, "203.0.113.7:1", "198.51.100.1:443", false, wire.TLV{Type: 0xE7, Value: make([]byte, 600)})
	cases := []struct {
		name, source string
		send         []byte
		result       string
		closeWrite   bool
	}{
		{"malformed v1", "127.0.0.1", []byte("PROXY TCP4 1.2.3 4.5.6.7 1 2\r\nGET / HTTP/1.1\r\n\r\n"), "malformed", false},
		{"malformed v2 version", "127.0.0.1", append(append([]byte(nil), good[:12]...), 0x31, 0x11, 0, 0), "malformed", false},
		{"oversized v2", "127.0.0.1", oversized, "oversized", false},
		{"oversized v1", "127.0.0.1", []byte("PROXY TCP4 " + strings.Repeat("1", 120)), "oversized", false},
		{"wrong CRC", "127.0.0.1", badCRC, "bad_crc", false},
		{"truncated", "127.0.0.1", good[:20], "truncated", true},
		{"missing header from trusted source", "127.0.0.1", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "missing", false},
		{"header from untrusted source", "127.0.0.2", good, "unexpected", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := headerCounts(t, c)[tc.result]
			conn := dialFrom(t, tc.source, addr)
			if _, err := conn.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.closeWrite {
				_ = conn.(*net.TCPConn).CloseWrite()
			}
			expectDropped(t, conn, tc.name)
			waitCount(t, c, tc.result, before+1)
			// the listener still serves everyone else
			if _, body, err := request(dialFrom(t, "127.0.0.1", addr), good, "x"); err != nil || fields(body)["remote"] != "203.0.113.7" {
				t.Errorf("after %s: %v %q", tc.name, err, body)
			}
		})
	}

	t.Run("slow header times out without blocking others", func(t *testing.T) {
		before := headerCounts(t, c)["timeout"]
		slow := dialFrom(t, "127.0.0.1", addr)
		if _, err := slow.Write(good[:10]); err != nil {
			t.Fatal(err)
		}
		// while the slow header is pending, another client is served
		start := time.Now()
		if _, body, err := request(dialFrom(t, "127.0.0.1", addr), good, "x"); err != nil || fields(body)["remote"] != "203.0.113.7" {
			t.Errorf("concurrent client: %v %q", err, body)
		}
		if waited := time.Since(start); waited > 300*time.Millisecond {
			t.Errorf("a pending slow header delayed another client by %s", waited)
		}
		expectDropped(t, slow, "slow header")
		waitCount(t, c, "timeout", before+1)
	})
}

func TestListenerPolicyOptions(t *testing.T) {
	t.Run("untrusted reject closes other sources", func(t *testing.T) {
		c, addr, _ := startListener(t, "trust 127.0.0.1/32")
		before := headerCounts(t, c)["untrusted"]
		conn := dialFrom(t, "127.0.0.3", addr)
		_, _, err := request(conn, nil, "x")
		if err == nil {
			t.Fatal("untrusted client was served")
		}
		waitCount(t, c, "untrusted", before+1)
	})
	t.Run("require_crc and versions", func(t *testing.T) {
		c, addr, _ := startListener(t, "trust 127.0.0.1/32\nversions v2\nrequire_crc")
		before := headerCounts(t, c)
		conn := dialFrom(t, "127.0.0.1", addr)
		_, _ = conn.Write(v2Header(t, "203.0.113.7:1", "198.51.100.1:443", false))
		expectDropped(t, conn, "v2 without CRC")
		conn = dialFrom(t, "127.0.0.1", addr)
		_, _ = conn.Write([]byte("PROXY TCP4 203.0.113.7 198.51.100.1 1 443\r\n"))
		expectDropped(t, conn, "v1 when only v2 is allowed")
		waitCount(t, c, "missing_crc", before["missing_crc"]+1)
		waitCount(t, c, "version", before["version"]+1)
		if _, body, err := request(dialFrom(t, "127.0.0.1", addr), v2Header(t, "203.0.113.8:1", "198.51.100.1:443", true), "x"); err != nil || fields(body)["remote"] != "203.0.113.8" {
			t.Errorf("v2 with CRC: %v %q", err, body)
		}
	})
}

func waitCount(t *testing.T, c *harness.Caddy, result string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := headerCounts(t, c)[result]
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rampart_proxy_headers_total{result=%q} = %v, want %v", result, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCurlHAProxyProtocol(t *testing.T) {
	curl := harness.Peer(t, "curl", "curl")
	_, addr, _ := startListener(t, defaultPolicy)
	out, err := exec.Command(curl, "-sS", "--max-time", "10", "--haproxy-protocol", "--interface", "127.0.0.9", "http://"+addr+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	// curl is its own load balancer: the header's source is its socket
	if f := fields(string(out)); f["v"] != "1" || f["remote"] != "127.0.0.9" || !strings.HasPrefix(f["src"], "127.0.0.9:") || f["peer"] != f["src"] {
		t.Errorf("curl --haproxy-protocol: %q", out)
	}
}

func TestHAProxySendsIntoRampart(t *testing.T) {
	_, caddyAddr, _ := startListener(t, defaultPolicy)
	p := newPKI(t, "edge.test", "alice")
	hp := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	harness.StartHAProxy(t, hp, fmt.Sprintf(`frontend fe
  mode http
  bind %s ssl crt %s ca-file %s verify optional
  unique-id-format %%{+X}o\ %%ci:%%cp_%%fi:%%fp_%%Ts_%%rt
  unique-id-header X-Unique-ID
  default_backend be

backend be
  mode http
  server caddy %s send-proxy-v2-ssl-cn proxy-v2-options authority,crc32c,unique-id
`, hp, p.serverPEMFile, p.caFile, caddyAddr))
	conf := &tls.Config{ServerName: "edge.test", RootCAs: p.pool, Certificates: []tls.Certificate{p.clientCert}}
	raw := dialFrom(t, "127.0.0.5", hp)
	tc := tls.Client(raw, conf)
	_, body, err := request(tc, nil, "edge.test")
	if err != nil {
		t.Fatal(err)
	}
	f := fields(body)
	want := map[string]string{"remote": "127.0.0.5", "v": "2", "authority": "edge.test", "cn": "alice", "sslv": "TLSv1.3", "verified": "true"}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("%s = %q, want %q (body %q)", k, f[k], v, body)
		}
	}
	if f["uid"] == "" || f["uid"] != f["xuid"] {
		t.Errorf("unique id TLV %q does not match HAProxy's X-Unique-ID %q", f["uid"], f["xuid"])
	}
}

func TestNginxStreamV1IntoRampart(t *testing.T) {
	_, caddyAddr, _ := startListener(t, defaultPolicy)
	np := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	harness.StartNginx(t, np, "", fmt.Sprintf("server {\n listen %s;\n proxy_pass %s;\n proxy_protocol on;\n}", np, caddyAddr))
	_, body, err := request(dialFrom(t, "127.0.0.7", np), nil, "x")
	if err != nil {
		t.Fatal(err)
	}
	if f := fields(body); f["remote"] != "127.0.0.7" || f["v"] != "1" {
		t.Errorf("nginx stream v1: %q", body)
	}
}

// TestReloadUnderLoad reloads the config repeatedly while clients keep
// opening connections with PROXY headers: proxy_v2 must refuse none of
// them. Caddy loses a few connections per thousand across reloads with or
// without proxy_v2 (measured alike): net/http's conn.serve returns without
// answering a request it finishes reading after Shutdown began, and on
// Linux Caddy binds each config's socket with SO_REUSEPORT, so the old
// socket's accept queue is reset when it closes. That loss is a few
// connections per reload whatever the load (8–17 over 5 reloads measured,
// between 1,000 and 2,300 connections depending on how busy the machine
// is), so the test bounds it per reload, at 8, and reports it.
func TestReloadUnderLoad(t *testing.T) {
	c, addr, logFile := startListener(t, defaultPolicy)
	var p int
	fmt.Sscan(addr[strings.LastIndexByte(addr, ':')+1:], &p)
	before := headerCounts(t, c)
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				src := fmt.Sprintf("203.0.113.%d:%d", w+1, 1000+i%50000)
				conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					failed.Add(1)
					continue
				}
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				_, body, err := request(conn, v2Header(t, src, "198.51.100.1:443", false), "x")
				conn.Close()
				if err != nil || fields(body)["remote"] != strings.Split(src, ":")[0] {
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for i := range 5 {
		time.Sleep(300 * time.Millisecond)
		c.Reload(listenerCaddyfile(p, strings.Replace(defaultPolicy, "timeout 400ms", fmt.Sprintf("timeout %dms", 401+i), 1), logFile))
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	after := headerCounts(t, c)
	accepted := after["ok"] - before["ok"]
	for _, r := range []string{"malformed", "truncated", "timeout", "error", "missing", "oversized", "bad_crc"} {
		if after[r] != before[r] {
			t.Errorf("proxy_v2 refused %v connections as %s during reloads", after[r]-before[r], r)
		}
	}
	total := ok.Load() + failed.Load()
	t.Logf("%d connections across 5 reloads: %v headers received, %d answered, %d closed by Caddy without an answer",
		total, accepted, ok.Load(), failed.Load())
	if ok.Load() < 100 || failed.Load() > 8*5 {
		t.Errorf("%d of %d connections failed", failed.Load(), total)
	}
}

// TestListenerAfterTLSIsRefused places proxy_v2 after tls, where no PROXY
// header can arrive: connections are dropped and counted, not served with
// the load balancer's address.
func TestListenerAfterTLSIsRefused(t *testing.T) {
	port := harness.FreePort(t)
	c := harness.RunCaddyfile(t, fmt.Sprintf(`{
	servers {
		# without tls in the list, Caddy puts tls first
		listener_wrappers {
			proxy_v2 {
				trust 127.0.0.1/32
			}
		}
	}
}
https://localhost:%d {
	tls internal
	respond "served"
}
`, port))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	harness.WaitListening(t, addr, 5*time.Second)
	before := headerCounts(t, c)["error"]
	tc := tls.Client(dialFrom(t, "127.0.0.1", addr), &tls.Config{ServerName: "localhost", InsecureSkipVerify: true})
	if _, _, err := request(tc, nil, "localhost"); err == nil {
		t.Fatal("a misplaced proxy_v2 served the request")
	}
	waitCount(t, c, "error", before+1)
}
