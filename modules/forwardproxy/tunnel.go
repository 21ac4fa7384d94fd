package forwardproxy

import (
	"errors"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	passthrough "github.com/rampart-edge/caddy-rampart/modules/passthrough/engine"

	"github.com/rampart-edge/caddy-rampart/modules/forwardproxy/egress"
)

// tunnel dials the decided destination and relays a CONNECT tunnel:
// HTTP/1.1 takes over the connection, HTTP/2 (and HTTP/3) relays the
// request stream's body and response.
func (fp *ForwardProxy) tunnel(w http.ResponseWriter, r *http.Request, d egress.Decision, ex *exchange) error {
	upstream, err := fp.dial(r.Context(), d, ex.port, ex)
	if err != nil {
		return fp.unreachable(w, ex, err)
	}
	defer upstream.Close()
	opts := passthrough.RelayOptions{IdleTimeout: time.Duration(fp.IdleTimeout)}
	rc := http.NewResponseController(w)

	if r.ProtoMajor == 1 {
		conn, brw, err := rc.Hijack()
		if err != nil {
			return fp.unreachable(w, ex, err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Time{}) // the server's read and write timeouts no longer apply
		if _, err := conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
			return nil
		}
		// bytes the client sent right after the request (e.g. a TLS
		// ClientHello) are already in the server's buffer: they go first,
		// and the relay then reads the connection itself (which it can
		// splice; a reader wrapping the buffer could not be)
		var early int64
		if n := brw.Reader.Buffered(); n > 0 {
			buffered, _ := brw.Reader.Peek(n)
			if _, err := upstream.Write(buffered); err != nil {
				return nil
			}
			early = int64(n)
		}
		bc, counted := caddyhttp.GetVar(r.Context(), byteCounterVar).(byteCounter)
		if counted {
			if early > 0 {
				bc.CountBytes(uint64(early), 0)
			}
			opts.OnBytes = func(up bool, n int64) {
				if up {
					bc.CountBytes(uint64(n), 0)
				} else {
					bc.CountBytes(0, uint64(n))
				}
			}
		}
		res := passthrough.Relay(conn, conn, upstream, opts)
		ex.up, ex.down = early+res.Up, res.Down
		return nil
	}

	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return nil
	}
	stream := &streamConn{body: r, w: w, rc: rc, deadlines: http.NewResponseController(innermost(w)), local: upstream.LocalAddr(), remote: upstream.RemoteAddr()}
	res := passthrough.Relay(stream, stream, upstream, opts)
	ex.up, ex.down = res.Up, res.Down
	return nil
}

// byteCounterVar is the request variable in which the stick module's track
// handler leaves its byte counter (modules/stick, bytesVar): an HTTP/1.1
// tunnel takes over the connection, so its bytes pass neither the request
// body nor the ResponseWriter that track counts. (HTTP/2 tunnels and
// forwarded requests do pass them, and do not use the counter.)
const byteCounterVar = "rampart.count_bytes"

// byteCounter adds bytes received from (in) and sent to (out) the client
// to the entries tracked for the request.
type byteCounter interface {
	CountBytes(in, out uint64)
}

// streamConn presents an HTTP/2 CONNECT stream (request body up, response
// body down) as a net.Conn for the relay. A stream cannot be half-closed
// from the handler (see CloseWrite). An HTTP/2 read deadline that
// expires ends the stream's body for good, so the relay's periodic wake-up
// deadlines are kept here ("soft": a Read after it returns a timeout
// without reading, which lets the relay record progress) and only a
// deadline in the past, the relay stopping, goes to the stream.
//
// The relay stops from either of its goroutines, so the deadlines go to
// the server's own stream writer (deadlines), whose deadline methods any
// goroutine may call, never through the handler's wrappers (Caddy's idle
// timeout writer keeps state there that only the handler's goroutine may
// touch).
type streamConn struct {
	body          *http.Request
	w             http.ResponseWriter
	rc            *http.ResponseController
	deadlines     *http.ResponseController
	local, remote net.Addr
	soft          atomic.Int64 // unix nanoseconds; 0: none
	downDone      atomic.Bool  // the destination finished sending
}

// errNoHalfClose tells the relay that a stream cannot be half-closed.
var errNoHalfClose = errors.New("an HTTP/2 stream cannot be half-closed by the handler")

// CloseWrite records that the destination finished sending and refuses
// the half-close: the relay then stops, the handler returns, and the
// stream ends after the data it carried. (The relay's stop also expires
// write deadlines, which would reset the stream instead: SetWriteDeadline
// skips that once the destination is done, when no write is pending.)
func (s *streamConn) CloseWrite() error {
	s.downDone.Store(true)
	return errNoHalfClose
}

func (s *streamConn) Read(p []byte) (int, error) {
	if d := s.soft.Load(); d != 0 && time.Now().UnixNano() > d {
		return 0, os.ErrDeadlineExceeded
	}
	return s.body.Body.Read(p)
}

func (s *streamConn) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		return n, err
	}
	return n, s.rc.Flush()
}

func (s *streamConn) Close() error         { return s.body.Body.Close() }
func (s *streamConn) LocalAddr() net.Addr  { return s.local }
func (s *streamConn) RemoteAddr() net.Addr { return s.remote }

func (s *streamConn) SetDeadline(t time.Time) error {
	_ = s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}

func (s *streamConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() || t.After(time.Now()) {
		var d int64
		if !t.IsZero() {
			d = t.UnixNano()
		}
		s.soft.Store(d)
		return nil
	}
	return s.deadlines.SetReadDeadline(t)
}

func (s *streamConn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() || t.After(time.Now()) || s.downDone.Load() {
		return nil // the relay only sets write deadlines to stop
	}
	return s.deadlines.SetWriteDeadline(t)
}

// innermost unwraps a ResponseWriter down to the server's own.
func innermost(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}
