package engine

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// HalfCloser is a connection whose sending side can be shut down alone
// (*net.TCPConn, *net.UnixConn, *tls.Conn).
type HalfCloser interface {
	CloseWrite() error
}

// RelayOptions tune Relay.
type RelayOptions struct {
	// IdleTimeout ends the relay when no byte moved in either direction
	// for this long. Zero means no idle timeout.
	IdleTimeout time.Duration
	// Chunk is how many bytes one copy call moves at most before progress
	// is recorded; 0 means DefaultChunk. Splice still moves them in the
	// kernel: the chunk only bounds how stale the counters and the idle
	// clock can be.
	Chunk int64
	// OnBytes, when set, is called after each chunk with the bytes moved
	// from client to backend (up) or backend to client (down).
	OnBytes func(up bool, n int64)
}

// DefaultChunk is the default progress granularity of Relay.
const DefaultChunk = 1 << 20

// RelayResult reports what Relay moved.
type RelayResult struct {
	Up, Down int64 // bytes client→backend and backend→client
	Idle     bool  // the idle timeout ended the relay
}

// Relay copies bytes both ways between a client and a backend until both
// directions have ended, then returns; it does not close the connections.
// The client is read through clientR and written through clientW (the same
// connection, or a wrapper that must be read through while writes can go to
// the socket underneath). When one side finishes sending (EOF), the other
// side's sending half is shut down (half-close) and the other direction
// continues. Given *net.TCPConn values, the kernel moves the bytes (splice)
// without copying them through user space.
func Relay(clientR, clientW, backend net.Conn, opts RelayOptions) RelayResult {
	if opts.Chunk <= 0 {
		opts.Chunk = DefaultChunk
	}
	var res RelayResult
	st := &relayState{opts: &opts}
	st.last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		res.Up = st.pump(backend, clientR, true)
	}()
	res.Down = st.pump(clientW, backend, false)
	wg.Wait()
	res.Idle = st.idle.Load()
	return res
}

// relayState is shared by the two directions of one relay.
type relayState struct {
	opts *RelayOptions
	last atomic.Int64 // unix nanoseconds of the last byte moved either way
	idle atomic.Bool  // the idle timeout fired
	stop atomic.Bool  // one direction failed: both end
}

// pump copies src to dst until EOF or an error. At EOF it half-closes dst;
// on an error it stops both directions by expiring the deadlines.
func (st *relayState) pump(dst, src net.Conn, up bool) int64 {
	opts := st.opts
	var total int64
	for {
		if opts.IdleTimeout > 0 {
			// wake up every quarter of the idle timeout: a copy in
			// progress reports its bytes only when it returns, so the
			// other direction could not see this one's traffic otherwise
			_ = src.SetReadDeadline(time.Now().Add(opts.IdleTimeout / 4))
		}
		n, err := io.CopyN(dst, src, opts.Chunk)
		if n > 0 {
			total += n
			st.last.Store(time.Now().UnixNano())
			if opts.OnBytes != nil {
				opts.OnBytes(up, n)
			}
		}
		if err == nil {
			continue
		}
		if st.stop.Load() {
			return total
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && opts.IdleTimeout > 0 {
			if time.Since(time.Unix(0, st.last.Load())) < opts.IdleTimeout {
				continue // the other direction kept the connection alive
			}
			st.idle.Store(true)
		} else if err == io.EOF {
			if hc, ok := dst.(HalfCloser); ok && hc.CloseWrite() == nil {
				return total
			}
		}
		st.stop.Store(true)
		now := time.Now()
		_ = src.SetDeadline(now)
		_ = dst.SetDeadline(now)
		return total
	}
}
