package scrub

import (
	"errors"
	"io"
	"sync"
)

// ChunkSize is how much input the streaming rewriter holds before it scans
// and writes: with the carry-over of a token's length this bounds its
// memory, whatever the body size.
const ChunkSize = 32 << 10

// maxCarry bounds what a Stream keeps between writes beyond ChunkSize: the
// longest token (a 253-byte host name) with its port and boundary, and the
// scheme lookback.
const maxCarry = 512

// chunkBuffers are the Streams' buffers, shared: a response whose body is
// written in one piece never takes one, others give it back on Close.
var chunkBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, ChunkSize+maxCarry)
	return &b
}}

// Stream is a streaming body rewriter: bytes written to it come out on the
// destination with every identity replaced. A match split across two
// writes is found because the last few bytes of each write (the longest
// token plus a port) are held back until the next write or Close. Each
// write is scanned where it lies when nothing is held from the one before;
// memory is constant: one ChunkSize buffer (pooled) plus that carry.
type Stream struct {
	m     *Matcher
	p     *Public
	dst   io.Writer
	limit int     // how many bytes buf holds before it is scanned
	held  *[]byte // pooled; nil while nothing is held between writes
	// emitted: the held bytes before it are written out; scan: the next
	// index to scan (both index the held bytes, or the write scanned in
	// place).
	emitted, scan int
	matches       int
	written       int64
	err           error
	closed        bool
}

// NewStream returns a rewriter writing to dst.
func NewStream(dst io.Writer, m *Matcher, p *Public) *Stream {
	return &Stream{m: m, p: p, dst: dst, limit: ChunkSize + min(m.tail()+lookback, maxCarry)}
}

// Matches returns how many identities were replaced so far.
func (s *Stream) Matches() int { return s.matches }

// Written returns how many bytes were written to the destination so far.
func (s *Stream) Written() int64 { return s.written }

// Write rewrites p. It always consumes all of p unless the destination fails.
func (s *Stream) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.closed {
		return 0, errors.New("scrub: write after close")
	}
	if s.held == nil || len(*s.held) == 0 {
		// nothing held: scan p where it is and keep only its undecided end
		drop, err := s.process(p, false)
		if err != nil {
			return 0, err
		}
		s.hold(p[drop:])
		return len(p), nil
	}
	n := 0
	for len(p) > 0 {
		buf := *s.held
		room := min(s.limit-len(buf), len(p))
		buf = append(buf, p[:room]...)
		*s.held = buf
		p = p[room:]
		n += room
		if len(buf) == s.limit {
			if err := s.processHeld(false); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// hold keeps the bytes of a write that cannot be decided yet.
func (s *Stream) hold(rest []byte) {
	if len(rest) == 0 {
		return
	}
	if s.held == nil {
		s.held = chunkBuffers.Get().(*[]byte)
	}
	*s.held = append((*s.held)[:0], rest...)
}

// Flush writes out everything that can be decided now (all but the carry).
func (s *Stream) Flush() error {
	if s.err != nil {
		return s.err
	}
	return s.processHeld(false)
}

// Close writes out the rest and gives the buffer back. It does not close
// the destination.
func (s *Stream) Close() error {
	if s.closed {
		return s.err
	}
	if s.err == nil {
		s.err = s.processHeld(true)
	}
	s.release()
	return s.err
}

// release gives the buffer back; the stream takes no more input.
func (s *Stream) release() {
	s.closed = true
	if s.held != nil {
		*s.held = (*s.held)[:0]
		chunkBuffers.Put(s.held)
		s.held = nil
	}
}

func (s *Stream) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := s.dst.Write(b)
	s.written += int64(n)
	if err != nil {
		s.err = err
	}
	return err
}

// processHeld processes the held bytes and drops what is no longer needed.
func (s *Stream) processHeld(final bool) error {
	if s.held == nil {
		return nil
	}
	buf := *s.held
	drop, err := s.process(buf, final)
	if err != nil {
		return err
	}
	if drop > 0 {
		*s.held = buf[:copy(buf, buf[drop:])]
	}
	return nil
}

// process scans data (the held bytes, or a write in place); unless final,
// the last tail bytes stay for the next round because a token starting
// there cannot be confirmed yet. It returns how many leading bytes of data
// are no longer needed; emitted and scan are moved down by as many.
func (s *Stream) process(data []byte, final bool) (int, error) {
	limit := len(data)
	if !final {
		limit -= s.m.tail()
	}
	if !s.m.Empty() {
		for s.scan < limit {
			mt, ok := s.m.Next(data, s.scan, limit, s.emitted)
			if !ok {
				break
			}
			if err := s.write(data[s.emitted:mt.Start]); err != nil {
				return 0, err
			}
			if err := s.write(s.p.replacementBytes(mt)); err != nil {
				return 0, err
			}
			s.emitted, s.scan = mt.End, mt.End
			s.matches++
		}
	}
	if s.scan < limit {
		s.scan = limit
	}
	// everything before scan-lookback can go out; the lookback bytes stay so
	// that a scheme prefix before the next token can still be rewritten.
	out := s.scan - lookback
	if final {
		out = len(data)
	}
	if out > s.emitted {
		if err := s.write(data[s.emitted:out]); err != nil {
			return 0, err
		}
		s.emitted = out
	}
	// drop what is no longer needed, keeping one boundary byte before scan
	drop := max(min(s.emitted, s.scan-lookback), 0)
	if final {
		drop = len(data)
	}
	s.emitted -= drop
	s.scan -= drop
	return drop, nil
}
