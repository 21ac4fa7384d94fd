package scrub

import (
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

var (
	gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}
	zstdWriters = sync.Pool{New: func() any {
		zw, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20))
		if err != nil {
			panic(err) // only for invalid options, which are constant
		}
		return zw
	}}
)

// zstdReaders keeps decoders: a new one allocates megabytes of tables.
var zstdReaders = sync.Pool{New: func() any {
	zr, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(64<<20), zstd.WithDecoderLowmem(true))
	if err != nil {
		panic(err) // only for invalid options, which are constant
	}
	return zr
}}

// pooledReader returns its decoder to a pool once closed.
type pooledReader struct {
	io.Reader
	put func()
}

func (r pooledReader) Close() error {
	r.put()
	return nil
}

// pooledWriter returns its encoder to a pool once closed.
type pooledWriter struct {
	io.WriteCloser
	put func()
}

func (w pooledWriter) Close() error {
	err := w.WriteCloser.Close()
	w.put()
	return err
}

// BodyRewriter is a WriteCloser that takes a (possibly compressed) body and
// writes the rewritten body, compressed with the same coding, to dst.
// Compressed bodies are decoded on a goroutine reading from a pipe, so
// memory stays constant.
type BodyRewriter struct {
	stream *Stream
	enc    io.WriteCloser // nil for identity
	pw     *io.PipeWriter // nil for identity
	done   chan error
	ended  bool
}

// NewBodyRewriter returns a rewriter for a body with the given
// Content-Encoding ("" for identity). It fails with ErrUndecodable for a
// coding outside Decodable.
func NewBodyRewriter(dst io.Writer, encoding string, m *Matcher, p *Public) (*BodyRewriter, error) {
	coding := normEncoding(encoding)
	if coding == "" || coding == "identity" {
		return &BodyRewriter{stream: NewStream(dst, m, p)}, nil
	}
	var enc io.WriteCloser
	var newDec func(io.Reader) (io.ReadCloser, error)
	switch coding {
	case "gzip", "x-gzip":
		gw := gzipWriters.Get().(*gzip.Writer)
		gw.Reset(dst)
		enc = pooledWriter{gw, func() { gzipWriters.Put(gw) }}
		newDec = func(r io.Reader) (io.ReadCloser, error) { return gzip.NewReader(r) }
	case "deflate":
		fw, _ := flate.NewWriter(dst, flate.DefaultCompression)
		enc = fw
		newDec = func(r io.Reader) (io.ReadCloser, error) { return flate.NewReader(r), nil }
	case "zstd":
		zw := zstdWriters.Get().(*zstd.Encoder)
		zw.Reset(dst)
		enc = pooledWriter{zw, func() { zstdWriters.Put(zw) }}
		newDec = func(r io.Reader) (io.ReadCloser, error) {
			zr := zstdReaders.Get().(*zstd.Decoder)
			if err := zr.Reset(r); err != nil {
				zstdReaders.Put(zr)
				return nil, err
			}
			return pooledReader{zr, func() { _ = zr.Reset(nil); zstdReaders.Put(zr) }}, nil
		}
	default:
		return nil, fmt.Errorf("%w: %q", ErrUndecodable, encoding)
	}
	pr, pw := io.Pipe()
	br := &BodyRewriter{stream: NewStream(enc, m, p), enc: enc, pw: pw, done: make(chan error, 1)}
	go func() {
		err := br.decode(pr, newDec)
		pr.CloseWithError(err)
		br.done <- err
	}()
	return br, nil
}

func (br *BodyRewriter) decode(pr io.Reader, newDec func(io.Reader) (io.ReadCloser, error)) error {
	dec, err := newDec(pr)
	if err != nil {
		return fmt.Errorf("decoding the origin's body: %w", err)
	}
	defer dec.Close()
	buf := make([]byte, ChunkSize)
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
	// drain whatever follows the compressed stream so the writer never blocks
	_, _ = io.Copy(io.Discard, pr)
	if err := br.stream.Close(); err != nil {
		return err
	}
	return br.enc.Close()
}

// Write takes the next piece of the origin's body.
func (br *BodyRewriter) Write(p []byte) (int, error) {
	if br.pw == nil {
		return br.stream.Write(p)
	}
	return br.pw.Write(p)
}

// Flush pushes out what can be decided (identity bodies only; a compressed
// body is flushed when it ends).
func (br *BodyRewriter) Flush() error {
	if br.pw == nil {
		return br.stream.Flush()
	}
	return nil
}

// Close finishes the body: the rest is rewritten, compressed and written.
func (br *BodyRewriter) Close() error {
	if br.ended {
		return nil
	}
	br.ended = true
	if br.pw == nil {
		return br.stream.Close()
	}
	br.pw.Close()
	return <-br.done
}

// Abort stops a compressed rewrite early (the client went away).
func (br *BodyRewriter) Abort(err error) {
	if br.ended {
		return
	}
	br.ended = true
	if br.pw != nil {
		br.pw.CloseWithError(err)
		<-br.done
	}
}

// Matches returns how many identities were replaced (valid after Close).
func (br *BodyRewriter) Matches() int { return br.stream.Matches() }
