package proxyv2

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"

	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

// received is what a receiver learned from the start of a connection.
type received struct {
	header    wire.Header
	hasHeader bool     // a header was read (PROXY or LOCAL)
	remote    net.Addr // the client as the rest of Caddy must see it
	local     net.Addr // the address the client connected to
	rest      []byte   // bytes read past the header, owed to the reader
}

// receive reads the start of a connection from r: the header of a trusted
// source, or the first bytes of an untrusted one (which must not be a
// header). sock supplies the socket addresses. On error the connection must
// be dropped; the result says why. A panic while reading costs only this
// connection (ResultError, logged with its stack to logger): net/http asks
// a connection for its address before it recovers panics.
func (p *Policy) receive(logger *zap.Logger, r io.Reader, sock net.Conn, trusted bool, into *received) (res Result, err error) {
	into.remote, into.local = sock.RemoteAddr(), sock.LocalAddr()
	defer func() {
		if v := recover(); v != nil {
			logger.Error("panic while receiving a PROXY header", zap.Any("panic", v), zap.Stack("stack"))
			*into = received{remote: sock.RemoteAddr(), local: sock.LocalAddr()}
			res, err = ResultError, fmt.Errorf("panic while receiving the header: %v", v)
		}
	}()
	rest, err := wire.ReadHeader(r, nil, p.MaxHeader, &into.header)
	if !trusted {
		switch {
		case errors.Is(err, wire.ErrNotProxy):
			into.rest = rest
			return ResultPlain, nil
		case err == nil || errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrBadCRC) || errors.Is(err, wire.ErrTooLarge):
			return ResultUnexpected, fmt.Errorf("PROXY header from an untrusted source refused")
		case errors.Is(err, io.EOF):
			return ResultEmpty, io.EOF
		}
		return classify(err), err
	}
	if err != nil {
		if errors.Is(err, wire.ErrNotProxy) {
			return ResultMissing, fmt.Errorf("trusted source sent no PROXY header")
		}
		return classify(err), err
	}
	into.hasHeader, into.rest = true, rest
	if res, err := p.check(&into.header); err != nil {
		return res, err
	}
	h := &into.header
	if h.Command == wire.CommandLocal {
		return ResultLocal, nil
	}
	switch h.Family {
	case wire.FamilyInet, wire.FamilyInet6:
		into.remote = tcpAddr(h.Source)
		into.local = tcpAddr(h.Destination)
	case wire.FamilyUnix:
		into.remote = &net.UnixAddr{Name: h.SourceUnix, Net: "unix"}
		into.local = &net.UnixAddr{Name: h.DestinationUnix, Net: "unix"}
	}
	return ResultOK, nil
}

// tcpAddr converts an address from a header to the type Caddy expects
// from a TCP connection, IPv4-mapped addresses unmapped.
func tcpAddr(ap netip.AddrPort) *net.TCPAddr {
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
}

// classify maps a read error to its result.
func classify(err error) Result {
	var netErr net.Error
	switch {
	case errors.Is(err, io.EOF):
		return ResultEmpty
	case errors.Is(err, wire.ErrTooLarge):
		return ResultOversized
	case errors.Is(err, wire.ErrBadCRC):
		return ResultBadCRC
	case errors.Is(err, wire.ErrMalformed):
		return ResultMalformed
	case errors.Is(err, wire.ErrTruncated):
		return ResultTruncated
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return ResultTimeout
	}
	return ResultError
}

// report counts a result and logs a refused connection through drops,
// with the peer's socket address.
func report(drops *dropLog, sock net.Conn, res Result, err error) {
	count(res)
	if err != nil {
		drops.drop(res, sock.RemoteAddr(), err)
	}
}

// errRefused wraps the reason a connection was dropped, for its readers.
type errRefused struct {
	result Result
	err    error
}

// Error names the result and the reason.
func (e *errRefused) Error() string {
	return fmt.Sprintf("proxy_v2: connection dropped (%s): %v", e.result, e.err)
}

// Unwrap returns the reason.
func (e *errRefused) Unwrap() error { return e.err }
