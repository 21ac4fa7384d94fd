package scrub

import (
	"errors"
	"io"
)

// ChunkSize is how much input the streaming rewriter takes before it scans
// and writes: with the carry-over of a token's length this bounds its
// memory, whatever the body size.
const ChunkSize = 32 << 10

// Stream is a streaming body rewriter: bytes written to it come out on the
// destination with every identity replaced. A match split across two
// writes is found because the last few bytes of each write (the longest
// token plus a port) are held back until the next write or Close. Memory is
// constant: one ChunkSize buffer plus that carry.
type Stream struct {
	m   *Matcher
	p   *Public
	dst io.Writer
	buf []byte
	// emitted: buf[:emitted] has been written out; scan: next index to scan.
	emitted, scan int
	matches       int
	written       int64
	err           error
	closed        bool
}

// NewStream returns a rewriter writing to dst.
func NewStream(dst io.Writer, m *Matcher, p *Public) *Stream {
	return &Stream{m: m, p: p, dst: dst, buf: make([]byte, 0, ChunkSize+m.tail()+lookback)}
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
	n := 0
	for len(p) > 0 {
		room := cap(s.buf) - len(s.buf)
		if room > len(p) {
			room = len(p)
		}
		s.buf = append(s.buf, p[:room]...)
		p = p[room:]
		n += room
		if len(s.buf) == cap(s.buf) {
			if err := s.process(false); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// Flush writes out everything that can be decided now (all but the carry).
func (s *Stream) Flush() error {
	if s.err != nil {
		return s.err
	}
	return s.process(false)
}

// Close writes out the rest. It does not close the destination.
func (s *Stream) Close() error {
	if s.closed {
		return s.err
	}
	if s.err == nil {
		s.err = s.process(true)
	}
	s.closed = true
	return s.err
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

// process scans the buffer; unless final, the last tail bytes stay for the
// next round because a token starting there cannot be confirmed yet.
func (s *Stream) process(final bool) error {
	limit := len(s.buf)
	if !final {
		limit -= s.m.tail()
	}
	if !s.m.Empty() {
		for s.scan < limit {
			mt, ok := s.m.Next(s.buf, s.scan, limit, s.emitted)
			if !ok {
				break
			}
			if err := s.write(s.buf[s.emitted:mt.Start]); err != nil {
				return err
			}
			if err := s.write(s.p.replacementBytes(mt)); err != nil {
				return err
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
		out = len(s.buf)
	}
	if out > s.emitted {
		if err := s.write(s.buf[s.emitted:out]); err != nil {
			return err
		}
		s.emitted = out
	}
	// drop what is no longer needed, keeping one boundary byte before scan
	drop := min(s.emitted, s.scan-lookback)
	if drop > 0 {
		n := copy(s.buf, s.buf[drop:])
		s.buf = s.buf[:n]
		s.emitted -= drop
		s.scan -= drop
	}
	return nil
}
