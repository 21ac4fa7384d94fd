package scrub

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Decodable lists the content codings the body rewriter can decode and
// re-encode. Brotli is not among them (no brotli package in the build):
// requests towards the origin advertise only these.
var Decodable = []string{"gzip", "zstd", "deflate"}

// ErrUndecodable is returned for a content coding the rewriter cannot
// decode; the caller must not pass such a body on unscanned.
var ErrUndecodable = errors.New("scrub: content coding cannot be decoded")

// CanDecode reports whether a Content-Encoding value (one coding, or empty
// for identity) can be rewritten.
func CanDecode(encoding string) bool {
	switch normEncoding(encoding) {
	case "", "identity", "gzip", "x-gzip", "zstd", "deflate":
		return true
	}
	return false
}

func normEncoding(e string) string { return strings.ToLower(strings.TrimSpace(e)) }

// FilterAcceptEncoding removes the codings the rewriter cannot decode from
// an Accept-Encoding request header, so that the origin sends a body the
// edge can scan. It returns "identity" when nothing is left.
func FilterAcceptEncoding(v string) string {
	if allDecodable(v) {
		return v // the usual "gzip, deflate, zstd": no allocation
	}
	var kept []string
	for _, part := range strings.Split(v, ",") {
		coding, _, _ := strings.Cut(part, ";")
		switch normEncoding(coding) {
		case "gzip", "x-gzip", "zstd", "deflate", "identity":
			kept = append(kept, strings.TrimSpace(part))
		}
	}
	if len(kept) == 0 {
		return "identity"
	}
	return strings.Join(kept, ", ")
}

// allDecodable reports whether every coding listed in an Accept-Encoding
// value can be decoded.
func allDecodable(v string) bool {
	for rest := v; ; {
		part, more, found := strings.Cut(rest, ",")
		coding, _, _ := strings.Cut(part, ";")
		coding = strings.TrimSpace(coding)
		if !(strings.EqualFold(coding, "gzip") || strings.EqualFold(coding, "x-gzip") || strings.EqualFold(coding, "zstd") ||
			strings.EqualFold(coding, "deflate") || strings.EqualFold(coding, "identity")) {
			return false
		}
		if !found {
			return true
		}
		rest = more
	}
}

// reencodeLevel is the gzip and deflate level of re-encoded bodies: Caddy's
// own `encode gzip` default, so a rewritten body costs what Caddy's
// compression of it would.
const reencodeLevel = 5

// flushWriteCloser is a compressor: gzip, flate and zstd writers are.
type flushWriteCloser interface {
	io.WriteCloser
	Flush() error
}

// idleCoders is how many idle compressors and decompressors of each kind
// are kept across garbage collections (a few MB for zstd, a few hundred KB
// for gzip and deflate at most).
const idleCoders = 8

var (
	// The coders are kept in free lists rather than sync.Pools: a pool
	// is emptied by every other garbage collection, and rebuilding a
	// compressor's tables allocated so much that the collections came
	// faster (a 64 KB zstd page cost ~4x its decode in the matrix).
	gzipWriters = newFreeList(idleCoders, func() *gzip.Writer {
		gw, _ := gzip.NewWriterLevel(nil, reencodeLevel) // a constant, valid level
		return gw
	})
	flateWriters = newFreeList(idleCoders, func() *flate.Writer {
		fw, _ := flate.NewWriter(nil, reencodeLevel)
		return fw
	})
	zstdWriters = newFreeList(idleCoders, func() *zstd.Encoder {
		zw, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20))
		if err != nil {
			panic(err) // only for invalid options, which are constant
		}
		return zw
	})
	// zstdReaders keeps decoders: a new one allocates megabytes of tables.
	zstdReaders = newFreeList(idleCoders, func() *zstd.Decoder {
		zr, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(64<<20), zstd.WithDecoderLowmem(true))
		if err != nil {
			panic(err) // only for invalid options, which are constant
		}
		return zr
	})
	// gzipReaders and flateReaders keep decompressors: a new one
	// allocates its ~40 KB window and tables.
	gzipReaders  = newFreeList(idleCoders, func() *gzip.Reader { return new(gzip.Reader) })
	flateReaders = newFreeList(idleCoders, func() io.ReadCloser { return flate.NewReader(bytes.NewReader(nil)) })
	// decodedBuffers hold a small compressed body's decoded bytes, so that
	// it is decoded once whether or not it names an identity.
	decodedBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	// outBuffers gather the decoder goroutine's output, so that the caller
	// is asked to write whole chunks rather than each few hundred bytes
	// a compressor emits.
	outBuffers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}
	// readBuffers are the decoders' output buffers.
	readBuffers = sync.Pool{New: func() any {
		b := make([]byte, ChunkSize)
		return &b
	}}
)

// freeList keeps up to a fixed number of idle values; get makes a new one
// when none is idle, put drops a value when the list is full.
type freeList[T any] struct {
	idle  chan T
	fresh func() T
}

// newFreeList returns a free list keeping up to n idle values made by fresh.
func newFreeList[T any](n int, fresh func() T) *freeList[T] {
	return &freeList[T]{idle: make(chan T, n), fresh: fresh}
}

// get returns an idle value or a new one.
func (l *freeList[T]) get() T {
	select {
	case v := <-l.idle:
		return v
	default:
		return l.fresh()
	}
}

// put keeps v for a later get, unless n values are idle already.
func (l *freeList[T]) put(v T) {
	select {
	case l.idle <- v:
	default:
	}
}

// newEncoder returns the compressor for a coding writing to dst and the
// function that gives it back once it is closed.
func newEncoder(coding string, dst io.Writer) (flushWriteCloser, func()) {
	switch coding {
	case "gzip", "x-gzip":
		gw := gzipWriters.get()
		gw.Reset(dst)
		return gw, func() { gw.Reset(nil); gzipWriters.put(gw) }
	case "zstd":
		zw := zstdWriters.get()
		zw.Reset(dst)
		return zw, func() { zw.Reset(nil); zstdWriters.put(zw) }
	}
	fw := flateWriters.get()
	fw.Reset(dst)
	return fw, func() { fw.Reset(nil); flateWriters.put(fw) }
}

// newDecoder returns the decompressor for a coding reading src and the
// function that gives it back.
func newDecoder(coding string, src io.Reader) (io.Reader, func(), error) {
	switch coding {
	case "gzip", "x-gzip":
		zr := gzipReaders.get()
		if err := zr.Reset(src); err != nil {
			gzipReaders.put(zr)
			return nil, nil, err
		}
		return zr, func() { gzipReaders.put(zr) }, nil
	case "zstd":
		zr := zstdReaders.get()
		if err := zr.Reset(src); err != nil {
			zstdReaders.put(zr)
			return nil, nil, err
		}
		return zr, func() { _ = zr.Reset(nil); zstdReaders.put(zr) }, nil
	}
	fr := flateReaders.get()
	if err := fr.(flate.Resetter).Reset(src, nil); err != nil {
		flateReaders.put(fr)
		return nil, nil, err
	}
	return fr, func() { flateReaders.put(fr) }, nil
}

// BodyRewriter is a WriteCloser that takes a (possibly compressed) body and
// writes the rewritten body, compressed with the same coding, to dst.
//
// Only the goroutine calling Write, Flush, Close and Abort writes to dst.
// A compressed body is decoded, rewritten and re-encoded on a goroutine of
// its own (decompressors pull their input), which asks the caller for
// input and hands it its output through channels; the caller serves those
// requests during its calls, so memory stays constant and dst (an
// http.ResponseWriter) is never touched concurrently.
type BodyRewriter struct {
	dst     io.Writer
	stream  *Stream
	coding  string // normalised; "" for identity
	release func() // gives the encoder back

	requests chan request // from the decoder goroutine; nil for identity
	answers  chan answer
	done     chan error
	input    []byte // the rest of the Write being served
	starved  []byte // a read buffer the decoder waits to have filled
	waiting  bool   // the decoder waits on starved
	result   error  // the decoder's result, once done
	finished bool   // the decoder goroutine has ended
	ended    bool   // Close or Abort was called
}

// request is one call of the decoder goroutine to the caller: fill b with
// input (read) or write b to dst.
type request struct {
	read bool
	b    []byte
}

// answer answers a request. flush asks a reader to flush what it decided
// before it reads again.
type answer struct {
	n     int
	err   error
	flush bool
}

// NewBodyRewriter returns a rewriter for a body with the given
// Content-Encoding ("" for identity). It fails with ErrUndecodable for a
// coding outside Decodable.
func NewBodyRewriter(dst io.Writer, encoding string, m *Matcher, p *Public) (*BodyRewriter, error) {
	coding := normEncoding(encoding)
	switch coding {
	case "", "identity":
		return &BodyRewriter{dst: dst, stream: NewStream(dst, m, p)}, nil
	case "gzip", "x-gzip", "zstd", "deflate":
	default:
		return nil, fmt.Errorf("%w: %q", ErrUndecodable, encoding)
	}
	br := &BodyRewriter{dst: dst, coding: coding, requests: make(chan request), answers: make(chan answer), done: make(chan error, 1)}
	out := outBuffers.Get().(*bufio.Writer)
	out.Reset(decoderWriter{br})
	enc, release := newEncoder(coding, out)
	br.release = func() {
		release()
		out.Reset(nil)
		outBuffers.Put(out)
	}
	br.stream = NewStream(enc, m, p)
	go func() { br.done <- br.decode(enc, out) }()
	return br, nil
}

// decode runs on the decoder goroutine: it reads the origin's body through
// the caller, rewrites it and writes the re-encoded result through the
// caller.
func (br *BodyRewriter) decode(enc flushWriteCloser, out *bufio.Writer) error {
	src := decoderReader{br: br, enc: enc, out: out}
	dec, put, err := newDecoder(br.coding, src)
	if err != nil {
		return fmt.Errorf("decoding the origin's body: %w", err)
	}
	defer put()
	bp := readBuffers.Get().(*[]byte)
	defer readBuffers.Put(bp)
	buf := *bp
	for {
		n, rerr := dec.Read(buf)
		if n > 0 {
			if _, err := br.stream.Write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("decoding the origin's body: %w", rerr)
		}
	}
	// take whatever follows the compressed stream so the caller never waits
	if _, err := io.Copy(io.Discard, src); err != nil {
		return err
	}
	if err := br.stream.Close(); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	return out.Flush()
}

// decoderReader is the decoder goroutine's input: each Read asks the
// caller for bytes. Asked to flush, it first pushes out everything decided
// so far (the decoder is waiting for input, so it has handed over all it
// could decode).
type decoderReader struct {
	br  *BodyRewriter
	enc flushWriteCloser
	out *bufio.Writer
}

func (r decoderReader) Read(b []byte) (int, error) {
	for {
		r.br.requests <- request{read: true, b: b}
		a := <-r.br.answers
		if !a.flush {
			return a.n, a.err
		}
		if err := r.br.stream.Flush(); err != nil {
			return 0, err
		}
		if err := r.enc.Flush(); err != nil {
			return 0, err
		}
		if err := r.out.Flush(); err != nil {
			return 0, err
		}
	}
}

// decoderWriter is the decoder goroutine's output: each Write asks the
// caller to write to dst.
type decoderWriter struct{ br *BodyRewriter }

func (w decoderWriter) Write(b []byte) (int, error) {
	w.br.requests <- request{b: b}
	a := <-w.br.answers
	return a.n, a.err
}

// serveMode says how the caller answers the decoder's reads.
type serveMode uint8

const (
	serveInput serveMode = iota // fill reads from input
	serveFlush                  // ask for a flush, then stop at the next read
	serveEOF                    // answer reads with the end of the body
	serveAbort                  // answer every request with an error
)

// serve answers one request of the decoder on the caller's goroutine. It
// reports false when the caller's call is done: the decoder ended, or (in
// serveFlush after the flush) it waits for input.
func (br *BodyRewriter) serve(mode serveMode, abort error, flushed *bool) bool {
	var rq request
	select {
	case rq = <-br.requests:
	case err := <-br.done:
		br.finished, br.result = true, err
		return false
	}
	if !rq.read {
		if mode == serveAbort {
			br.answers <- answer{err: abort}
			return true
		}
		n, err := br.dst.Write(rq.b)
		br.answers <- answer{n: n, err: err}
		return true
	}
	switch mode {
	case serveInput:
		n := copy(rq.b, br.input)
		br.input = br.input[n:]
		br.answers <- answer{n: n}
	case serveFlush:
		if *flushed {
			br.starved, br.waiting = rq.b, true
			return false
		}
		*flushed = true
		br.answers <- answer{flush: true}
	case serveEOF:
		br.answers <- answer{err: io.EOF}
	case serveAbort:
		br.answers <- answer{err: abort}
	}
	return true
}

// feedStarved fills a read the decoder waits on with input.
func (br *BodyRewriter) feedStarved() {
	n := copy(br.starved, br.input)
	br.input = br.input[n:]
	br.starved, br.waiting = nil, false
	br.answers <- answer{n: n}
}

// errEnded is what writes after the decoder stopped early get.
var errEnded = errors.New("scrub: the compressed body ended")

// Write takes the next piece of the origin's body.
func (br *BodyRewriter) Write(p []byte) (int, error) {
	if br.requests == nil {
		return br.stream.Write(p)
	}
	if br.ended {
		return 0, errors.New("scrub: write after close")
	}
	br.input = p
	if br.waiting && len(p) > 0 {
		br.feedStarved()
	}
	for len(br.input) > 0 && !br.finished {
		br.serve(serveInput, nil, nil)
	}
	n := len(p) - len(br.input)
	br.input = nil
	if br.finished && n < len(p) {
		if br.result != nil {
			return n, br.result
		}
		return n, errEnded
	}
	return n, nil
}

// Flush pushes out what can be decided now: for a compressed body, all the
// input so far is decoded, everything before the last few bytes is
// rewritten, and the encoder flushes (as the origin's did).
func (br *BodyRewriter) Flush() error {
	if br.requests == nil {
		return br.stream.Flush()
	}
	if br.ended || br.waiting {
		return nil // nothing arrived since the last flush
	}
	flushed := false
	for !br.finished && br.serve(serveFlush, nil, &flushed) {
	}
	return br.result
}

// Close finishes the body: the rest is rewritten, compressed and written.
func (br *BodyRewriter) Close() error {
	if br.ended {
		return br.result
	}
	br.ended = true
	if br.requests == nil {
		return br.stream.Close()
	}
	if br.waiting {
		br.starved, br.waiting = nil, false
		br.answers <- answer{err: io.EOF}
	}
	for !br.finished {
		br.serve(serveEOF, nil, nil)
	}
	br.release()
	return br.result
}

// Abort stops a rewrite early (the client went away, the origin broke
// off): nothing more is written, the decoder goroutine ends and the
// buffers go back.
func (br *BodyRewriter) Abort(err error) {
	if br.ended {
		return
	}
	br.ended = true
	if br.requests == nil {
		br.stream.release()
		return
	}
	if br.waiting {
		br.starved, br.waiting = nil, false
		br.answers <- answer{err: err}
	}
	for !br.finished {
		br.serve(serveAbort, err, nil)
	}
	br.stream.release()
	br.release()
}

// Matches returns how many identities were replaced (valid after Close).
func (br *BodyRewriter) Matches() int { return br.stream.Matches() }

// ContentCoding reads the Content-Encoding header's values (several lines
// and comma-separated lists alike): it returns the one coding the body
// has ("" for none or identity only) and reports false when the body is
// encoded more than once or with a coding outside Decodable, so that the
// caller can fail closed instead of passing it on unscanned.
func ContentCoding(values []string) (string, bool) {
	coding := ""
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			c := normEncoding(part)
			switch c {
			case "", "identity":
				continue
			case "x-gzip":
				c = "gzip"
			}
			if coding != "" || !CanDecode(c) {
				return "", false
			}
			coding = c
		}
	}
	return coding, true
}

// RewriteWhole rewrites a complete body held in memory, decoding and
// re-encoding it with its coding, for a response that keeps an exact
// Content-Length. It returns how many identities it replaced: with none,
// nothing is written to out and body stands as it is.
func RewriteWhole(out io.Writer, body []byte, encoding string, m *Matcher, p *Public) (int, error) {
	coding := normEncoding(encoding)
	if coding == "" || coding == "identity" {
		if _, found := m.Next(body, 0, len(body), 0); !found {
			return 0, nil
		}
		s := NewStream(out, m, p)
		s.Write(body)
		err := s.Close()
		return s.Matches(), err
	}
	if !CanDecode(coding) {
		return 0, fmt.Errorf("%w: %q", ErrUndecodable, encoding)
	}
	// decoded once into a pooled buffer and looked at: most bodies name no
	// identity and go out as the origin compressed them
	plain := decodedBuffers.Get().(*bytes.Buffer)
	defer func() {
		if plain.Cap() <= maxDecodedWhole+bytes.MinRead {
			plain.Reset()
			decodedBuffers.Put(plain)
		}
	}()
	if err := decodeAtMost(plain, body, coding); err != nil {
		return 0, err
	}
	if plain.Len() > maxDecodedWhole {
		// too large to hold decoded: a first streamed pass only looks,
		// a second rewrites
		plain.Reset()
		n, err := rewriteDecoded(io.Discard, body, coding, m, p, nil)
		if err != nil || n == 0 {
			return 0, err
		}
		enc, release := newEncoder(coding, out)
		defer release()
		return rewriteDecoded(enc, body, coding, m, p, enc)
	}
	decoded := plain.Bytes()
	if _, found := m.Next(decoded, 0, len(decoded), 0); !found {
		return 0, nil
	}
	enc, release := newEncoder(coding, out)
	defer release()
	s := NewStream(enc, m, p)
	s.Write(decoded)
	if err := s.Close(); err != nil {
		return 0, err
	}
	if err := enc.Close(); err != nil {
		return 0, err
	}
	return s.Matches(), nil
}

// maxDecodedWhole is how much of a small compressed body RewriteWhole
// holds decoded; a body that inflates beyond it is decoded twice, streamed.
const maxDecodedWhole = 1 << 20

// decodeAtMost decodes body into buf, stopping after maxDecodedWhole+1
// bytes.
func decodeAtMost(buf *bytes.Buffer, body []byte, coding string) error {
	dec, put, err := newDecoder(coding, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("decoding the origin's body: %w", err)
	}
	defer put()
	if _, err := buf.ReadFrom(io.LimitReader(readerOnly{dec}, maxDecodedWhole+1)); err != nil {
		return fmt.Errorf("decoding the origin's body: %w", err)
	}
	return nil
}

// rewriteDecoded decodes body, rewrites it into w and closes enc (when
// set) after the stream.
func rewriteDecoded(w io.Writer, body []byte, coding string, m *Matcher, p *Public, enc io.Closer) (int, error) {
	dec, put, err := newDecoder(coding, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("decoding the origin's body: %w", err)
	}
	defer put()
	s := NewStream(w, m, p)
	defer s.release()
	bp := readBuffers.Get().(*[]byte)
	defer readBuffers.Put(bp)
	if _, err := io.CopyBuffer(writerOnly{s}, readerOnly{dec}, *bp); err != nil {
		return 0, fmt.Errorf("decoding the origin's body: %w", err)
	}
	if err := s.Close(); err != nil {
		return 0, err
	}
	if enc != nil {
		if err := enc.Close(); err != nil {
			return 0, err
		}
	}
	return s.Matches(), nil
}

// writerOnly and readerOnly hide ReadFrom and WriteTo so that CopyBuffer
// uses the pooled buffer.
type (
	writerOnly struct{ io.Writer }
	readerOnly struct{ io.Reader }
)
