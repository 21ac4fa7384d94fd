package proxyv2

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// faultyConn is a real loopback socket whose reads panic, standing for a
// fault in the header parser, and which records being closed.
type faultyConn struct {
	net.Conn
	closed atomic.Int32
}

func (c *faultyConn) Read([]byte) (int, error) { panic("parser fault") }

func (c *faultyConn) Close() error {
	c.closed.Add(1)
	return c.Conn.Close()
}

// loopbackPair returns both ends of a TCP connection on 127.0.0.1.
func loopbackPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestPanicWhileReceivingCostsOneConnection: net/http asks a connection
// for its address before it recovers panics, so a fault while reading the
// header must drop that connection (closed, counted once as error) and
// leave the caller running.
func TestPanicWhileReceivingCostsOneConnection(t *testing.T) {
	_, server := loopbackPair(t)
	core, logs := observer.New(zapcore.DebugLevel)
	lw := &ListenerWrapper{Policy: Policy{Trust: []string{"127.0.0.1"}}, logger: zap.New(core), drops: newDropLog(zap.New(core))}
	if err := lw.provision("proxy_v2"); err != nil {
		t.Fatal(err)
	}
	defer lw.Cleanup()
	sock := &faultyConn{Conn: server}
	c := &Conn{Conn: sock, lw: lw, trusted: true}
	before := counterValue(resultCounters[ResultError])

	if got := c.RemoteAddr(); got == nil || got.String() != server.RemoteAddr().String() {
		t.Errorf("RemoteAddr after the fault = %v, want the socket's peer %v", got, server.RemoteAddr())
	}
	_, err := c.Read(make([]byte, 10))
	var refused *errRefused
	if !errors.As(err, &refused) || refused.result != ResultError {
		t.Errorf("Read after the fault: %v", err)
	}
	_ = c.LocalAddr()
	if n := sock.closed.Load(); n != 1 {
		t.Errorf("socket closed %d times, want once", n)
	}
	if n := counterValue(resultCounters[ResultError]) - before; n != 1 {
		t.Errorf("counted %v times, want once", n)
	}
	if logs.FilterMessage("panic while receiving a PROXY header").Len() != 1 {
		t.Errorf("the fault was not logged with its stack: %v", logs.All())
	}
}

// counterValue reads a counter's value.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}
