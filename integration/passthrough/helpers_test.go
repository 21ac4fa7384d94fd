package passthrough_test

import (
	"bufio"
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

// backend is a TLS server with its own certificate: it greets every
// connection with "backend=<id>" and then echoes what it reads.
type backend struct {
	id   string
	addr string
	ln   net.Listener
	mu   sync.Mutex
	open map[net.Conn]struct{}
	wg   sync.WaitGroup
}

func startBackend(t testing.TB, id, addr string) *backend {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := tls.Listen("tcp", addr, &tls.Config{
		Certificates: []tls.Certificate{harness.SelfSigned(t, "passthrough backend", "pass.test", "a.tenant.test", "api-7.test").TLS},
		NextProtos:   []string{"h2", "http/1.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{id: id, addr: ln.Addr().String(), ln: ln, open: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.open[c] = struct{}{}
			b.mu.Unlock()
			go func() {
				defer func() {
					b.mu.Lock()
					delete(b.open, c)
					b.mu.Unlock()
					c.Close()
				}()
				if _, err := fmt.Fprintf(c, "backend=%s\n", id); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(b.stop)
	return b
}

// stop closes the listener and every open connection.
func (b *backend) stop() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.open {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// session is a client connection through the edge.
type session struct {
	conn    *tls.Conn
	r       *bufio.Reader
	backend string // the greeting's id, for passthrough connections
}

// dialTLS connects to the edge with an SNI and completes the handshake
// without verifying (the test inspects the certificate itself).
func dialTLS(addr, sni string, alpn ...string) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 3 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: alpn})
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, nil
}

// openSession dials a passthrough name and reads the backend's greeting.
func openSession(addr, sni string) (*session, error) {
	c, err := dialTLS(addr, sni, "h2")
	if err != nil {
		return nil, err
	}
	s := &session{conn: c, r: bufio.NewReader(c)}
	line, err := s.r.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("reading greeting: %w", err)
	}
	s.backend = strings.TrimPrefix(strings.TrimSpace(line), "backend=")
	return s, nil
}

// echo sends a line and checks it comes back.
func (s *session) echo(msg string) error {
	_ = s.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(s.conn, "%s\n", msg); err != nil {
		return err
	}
	got, err := s.r.ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(got) != msg {
		return fmt.Errorf("echo %q came back as %q", msg, got)
	}
	return nil
}

// peerOrg is the organization of the certificate the edge presented.
func peerOrg(c *tls.Conn) string {
	certs := c.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return ""
	}
	return strings.Join(certs[0].Issuer.Organization, ",") + "|" + certs[0].Issuer.CommonName
}

// headerReceiver accepts one connection, parses its PROXY header with the
// wire package and checks that the TLS ClientHello follows it. It returns
// its address and the header (nil after an error, which fails the test).
func headerReceiver(t testing.TB) (string, <-chan *wire.Header) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	headers := make(chan *wire.Header, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		var h wire.Header
		rest, err := wire.ReadHeader(c, nil, 4096, &h)
		if err == nil && (len(rest) == 0 || rest[0] != 22) {
			err = fmt.Errorf("the ClientHello does not follow the header (%d bytes)", len(rest))
		}
		if err != nil {
			t.Errorf("receiver: %v", err)
			headers <- nil
			return
		}
		headers <- &h
	}()
	return ln.Addr().String(), headers
}

// nextHeader waits for the receiver's header.
func nextHeader(t testing.TB, headers <-chan *wire.Header) *wire.Header {
	t.Helper()
	select {
	case h := <-headers:
		if h == nil {
			t.FailNow()
		}
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("no PROXY header reached the receiver")
		return nil
	}
}

// waitBackend waits until new connections to name reach the backend want.
func waitBackend(t testing.TB, addr, name, want string) {
	t.Helper()
	eventually(t, 5*time.Second, "new connections on backend "+want, func() error {
		s, err := openSession(addr, name)
		if err != nil {
			return err
		}
		s.conn.Close()
		if s.backend != want {
			return fmt.Errorf("reached %q", s.backend)
		}
		return nil
	})
}

// eventually retries f until it succeeds or the time is up.
func eventually(t testing.TB, within time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
