package forwardproxy_test

import (
	"bufio"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
)

// benchSize is how much one throughput op moves (RAMPART_BENCH_BYTES
// overrides the 1 GiB default).
func benchSize(b *testing.B) int64 {
	if v := os.Getenv("RAMPART_BENCH_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	return 1 << 30
}

// serveSource writes size bytes to every connection, then closes it.
func serveSource(l net.Listener, size int64) {
	buf := make([]byte, 256<<10)
	harness.ServeEach(l, func(c net.Conn) {
		for left := size; left > 0; {
			w, err := c.Write(buf[:min(left, int64(len(buf)))])
			if err != nil {
				return
			}
			left -= int64(w)
		}
	})
}

// benchEnv runs a proxy admitting 127.0.0.1 by source (no password
// hashing in the figures) in front of a source and an echo origin.
type benchEnv struct {
	proxy, secure string
	source, echo  *countingListener
	proxyPool     *x509.CertPool
}

func newBenchEnv(b *testing.B) *benchEnv {
	size := benchSize(b)
	be := &benchEnv{source: listen(b, allowedIP), echo: listen(b, allowedIP)}
	go serveSource(be.source, size)
	go serveEcho(be.echo)
	cert := harness.SelfSigned(b, "proxy", "proxy.test")
	be.proxyPool = x509.NewCertPool()
	c, _ := x509.ParseCertificate(cert.TLS.Certificate[0])
	be.proxyPool.AddCert(c)
	be.proxy = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(b))
	be.secure = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(b))
	opts := fmt.Sprintf(`
		allow_source 127.0.0.1/32
		allow_destination %s/32
		connect_ports %d %d`, allowedIP, be.source.port(), be.echo.port())
	harness.RunCaddyfile(b, fmt.Sprintf(`{
	auto_https off
	default_bind 127.0.0.1 ::1
}

:%s {
	forward_proxy {%s
	}
}

:%s {
	tls %s %s
	forward_proxy {%s
	}
}
`, portOf(be.proxy), opts, portOf(be.secure), cert.CertFile, cert.KeyFile, opts))
	harness.WaitListening(b, be.proxy, 5*time.Second)
	harness.WaitListening(b, be.secure, 5*time.Second)
	return be
}

// connectH1 opens an HTTP/1.1 CONNECT tunnel to target.
func (be *benchEnv) connectH1(b *testing.B, target string) (net.Conn, *bufio.Reader) {
	conn, err := net.Dial("tcp", be.proxy)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("CONNECT %s: %v %v", target, resp, err)
	}
	return conn, br
}

// BenchmarkTunnelThroughput downloads benchSize bytes (1 GiB) from a
// loopback origin directly, through an HTTP/1.1 CONNECT tunnel and through
// an HTTP/2 CONNECT stream of the HTTPS proxy, through a bare relay
// (io.Copy both ways, no HTTP) and through HAProxy in mode tcp (without and
// with splice), the anchors of what any user-space relay achieves here. The figure is the tunnel's
// MB/s over the direct connection's, from one alternating run
// (integration/bench/forwardproxy.sh prints it).
func BenchmarkTunnelThroughput(b *testing.B) {
	be := newBenchEnv(b)
	size := benchSize(b)
	target := net.JoinHostPort(allowedIP, fmt.Sprint(be.source.port()))
	drain := func(b *testing.B, r io.Reader) {
		n, err := io.Copy(io.Discard, r)
		if err != nil || n != size {
			b.Fatalf("read %d of %d bytes: %v", n, size, err)
		}
	}
	// download runs a sub-benchmark that downloads from addr with no
	// proxy protocol (the origin itself, or a TCP relay to it)
	download := func(name, addr string) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				drain(b, conn)
				conn.Close()
			}
		})
	}
	download("direct", target)
	// the floor of any user-space proxy on this machine: a bare relay
	// (io.Copy both ways, spliced by the kernel) with no HTTP at all
	bare := listen(b, "127.0.0.1")
	go serveBareRelay(bare, target)
	download("bare_relay", bare.Addr().String())
	// the anchor of what a mature user-space relay achieves here: HAProxy
	// in mode tcp, with its default buffers (recv/send through 16 KiB) and
	// with splice(2) (option splice-auto)
	haproxy := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(b))
	haproxySplice := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(b))
	harness.StartHAProxy(b, haproxySplice, fmt.Sprintf(`frontend copy
  mode tcp
  bind %s
  default_backend source
frontend splice
  mode tcp
  option splice-auto
  bind %s
  default_backend source
backend source
  mode tcp
  server source %s
`, haproxy, haproxySplice, target))
	download("haproxy_tcp", haproxy)
	download("haproxy_splice", haproxySplice)
	// throughTunnel runs a sub-benchmark that downloads through an
	// HTTP/1.1 CONNECT tunnel of proxy
	throughTunnel := func(name string, proxy *benchEnv) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				conn, br := proxy.connectH1(b, target)
				drain(b, br)
				conn.Close()
			}
		})
	}
	throughTunnel("connect_h1", be)
	// the same tunnel in a Caddy process of its own (the binary given in
	// RAMPART_BENCH_CADDY, built from cmd/caddy), as HAProxy runs: the
	// in-process tunnel shares this process's scheduler with the client
	// and the origin
	if bin := os.Getenv("RAMPART_BENCH_CADDY"); bin != "" {
		proxy := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(b))
		config := filepath.Join(b.TempDir(), "Caddyfile")
		if err := os.WriteFile(config, fmt.Appendf(nil, `{
	admin off
	auto_https off
}
:%s {
	bind 127.0.0.1
	forward_proxy {
		allow_source 127.0.0.1/32
		allow_destination %s/32
		connect_ports %d
	}
}
`, portOf(proxy), allowedIP, be.source.port()), 0o600); err != nil {
			b.Fatal(err)
		}
		harness.Start(b, proxy, bin, "run", "--adapter", "caddyfile", "--config", config)
		throughTunnel("connect_h1_process", &benchEnv{proxy: proxy})
	}
	b.Run("connect_h2", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			cc := h2Dial(b, be.secure, be.proxyPool)
			resp, stream := h2Open(b, cc, target, nil)
			if resp.StatusCode != 200 {
				b.Fatal(resp.Status)
			}
			drain(b, stream)
			stream.Close()
			cc.Close()
		}
	})
}

// serveBareRelay relays every connection to target with io.Copy both ways.
func serveBareRelay(l net.Listener, target string) {
	harness.ServeEach(l, func(c net.Conn) {
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer up.Close()
		go func() { _, _ = io.Copy(up, c) }()
		_, _ = io.Copy(c, up)
	})
}

// BenchmarkNewTunnels opens a connection, a CONNECT tunnel and one echo
// round trip per op, against the same round trip on a direct connection.
func BenchmarkNewTunnels(b *testing.B) {
	be := newBenchEnv(b)
	target := net.JoinHostPort(allowedIP, fmt.Sprint(be.echo.port()))
	ping := func(b *testing.B, c net.Conn, r io.Reader) {
		buf := make([]byte, 1)
		if _, err := c.Write([]byte{'x'}); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c, err := net.Dial("tcp", target)
			if err != nil {
				b.Fatal(err)
			}
			ping(b, c, c)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
	})
	b.Run("connect_h1", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c, br := be.connectH1(b, target)
			ping(b, c, br)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tunnels/s")
	})
}
