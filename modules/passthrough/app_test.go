package passthrough

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// wrapped hides a connection behind a wrapper, as the chain's wrappers do.
type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

// staticListener accepts one given connection.
type staticListener struct {
	net.Listener
	conn net.Conn
}

func (l staticListener) Accept() (net.Conn, error) { return l.conn, nil }

// keepAliveOn reads SO_KEEPALIVE of a TCP connection.
func keepAliveOn(t *testing.T, c *net.TCPConn) bool {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	if err := raw.Control(func(fd uintptr) { v, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return v != 0
}

// TestKeepAliveOnHandedOnConnections: the passthrough network opens its
// socket without TCP keepalive (relayed connections end by idle_timeout,
// and four setsockopt calls per connection are saved); the connections
// handed on to the HTTP server get the keepalive it asked for, on the
// socket beneath the wrappers.
func TestKeepAliveOnHandedOnConnections(t *testing.T) {
	ln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	tc := server.(*net.TCPConn)
	if keepAliveOn(t, tc) {
		t.Fatal("keepalive on before the handoff")
	}
	kl := keepAliveListener{
		Listener: staticListener{Listener: ln, conn: wrapped{wrapped{server}}},
		config:   net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 15 * time.Second, Count: 9},
	}
	got, err := kl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.(wrapped); !ok {
		t.Fatalf("Accept returned %T, want the wrapped connection itself", got)
	}
	if !keepAliveOn(t, tc) {
		t.Fatal("keepalive off on a connection handed to the HTTP server")
	}
}
