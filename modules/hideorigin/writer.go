package hideorigin

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/modules/hideorigin/scrub"
)

// sniffLen is how much of an untyped body is looked at to tell text from
// binary, as browsers and http.DetectContentType do.
const sniffLen = 512

// wholeBuffers hold small Content-Length bodies (and the first bytes of
// untyped ones) until they end, in two sizes: pageBody for the common page
// (a garbage collection empties the pools, and refilling them with
// smallBody buffers cost a 2 KB page 64 KiB of zeroed memory each time),
// smallBody for the others; rewrittenBuffers hold their rewrite.
var (
	wholeBuffers = [2]sync.Pool{
		{New: func() any {
			b := make([]byte, 0, pageBody)
			return &b
		}},
		{New: func() any {
			b := make([]byte, 0, smallBody)
			return &b
		}},
	}
	rewrittenBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}
)

// pageBody is the size of the smaller whole-body buffers.
const pageBody = 8 << 10

// getWhole returns a pooled buffer with room for n bytes.
func getWhole(n int64) *[]byte {
	if n <= pageBody {
		return wholeBuffers[0].Get().(*[]byte)
	}
	return wholeBuffers[1].Get().(*[]byte)
}

// scrubWriter wraps the response writer: headers are scrubbed when they are
// written (so Caddy's own Via, added by reverse_proxy to the response
// writer's header map, is seen and removed), and text bodies go through the
// rewriter. Everything it writes to the ResponseWriter it writes from the
// handler's goroutine, during the handler's calls.
type scrubWriter struct {
	caddyhttp.ResponseWriterWrapper
	h    *Handler
	r    *http.Request
	repl *caddy.Replacer
	pub  *scrub.Public
	m    *scrub.Matcher

	wroteHeader bool
	trailers    bool // the response announced trailers: scrub them at the end
	status      int
	discard     bool // the body is not passed on (generic error page, range refetch)
	retryRange  bool
	retried     bool
	sniffing    bool // an untyped body: held until it can be told text or binary

	coding string              // the body's one content coding, "" for identity
	body   *scrub.BodyRewriter // streamed bodies
	whole  *[]byte             // small Content-Length bodies, rewritten when they end; pooled
	err    error
}

func (h *Handler) newWriter(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, pub *scrub.Public) *scrubWriter {
	return &scrubWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, h: h, r: r, repl: repl, pub: pub}
}

// WriteHeader scrubs the headers and decides what happens to the body.
func (sw *scrubWriter) WriteHeader(status int) {
	if sw.wroteHeader {
		return
	}
	h := sw.h
	upstream, _ := sw.repl.GetString("http.reverse_proxy.upstream.hostport")
	sw.m = h.learn(upstream)
	hdr := sw.Header()
	if n := h.strip.Scrub(sw.m, hdr, sw.pub); n > 0 {
		rewritesHeader.Add(float64(n))
	}
	if status < 200 && status != http.StatusSwitchingProtocols {
		// informational (103 Early Hints carries Link headers): scrubbed, passed on
		sw.ResponseWriter.WriteHeader(status)
		return
	}
	sw.wroteHeader, sw.status = true, status
	_, sw.trailers = hdr["Trailer"]
	if status == http.StatusSwitchingProtocols {
		sw.ResponseWriter.WriteHeader(status)
		return
	}
	if status >= 500 && h.generic {
		sw.discard = true
		h.logger.Warn("origin 5xx body replaced with the generic error page",
			zap.String("request_id", requestID(sw.repl)), zap.Int("status", status))
		metricActions.WithLabelValues("generic_error").Inc()
		h.writeGeneric(sw.ResponseWriter, status, sw.repl)
		return
	}
	ct := hdr.Get("Content-Type")
	if len(h.bodyTypes) == 0 || sw.m.Empty() || ct != "" && !h.rewritable(ct) {
		sw.ResponseWriter.WriteHeader(status)
		return
	}
	if status == http.StatusPartialContent && !sw.retried && sw.r.Method == http.MethodGet {
		sw.retryRange, sw.discard = true, true
		return
	}
	coding, ok := scrub.ContentCoding(hdr["Content-Encoding"])
	if !ok {
		// fail closed: a body that cannot be inspected is not passed on
		sw.discard = true
		h.logger.Error("origin sent a content coding hide_origin cannot decode; answered 502",
			zap.String("request_id", requestID(sw.repl)), zap.Strings("content_encoding", hdr["Content-Encoding"]))
		metricActions.WithLabelValues("undecodable").Inc()
		h.writeGeneric(sw.ResponseWriter, http.StatusBadGateway, sw.repl)
		return
	}
	sw.coding = coding
	hasBody := sw.r.Method != http.MethodHead && status != http.StatusNoContent && status != http.StatusNotModified
	if ct == "" && coding == "" && hasBody {
		// untyped: the first bytes tell (an untyped compressed body is
		// rewritten as text)
		sw.sniffing = true
		sw.whole = getWhole(sniffLen)
		return
	}
	sw.startRewrite(hasBody, nil)
}

// startRewrite sends the header of a response whose body is rewritten (or
// holds it back for a small body) and sets up the rewriter; held is what
// arrived while the body was sniffed (pooled), or nil.
func (sw *scrubWriter) startRewrite(hasBody bool, held *[]byte) {
	hdr := sw.Header()
	hdr.Del("Accept-Ranges")
	if etag := hdr.Get("Etag"); etag != "" && !strings.HasPrefix(etag, "W/") {
		hdr.Set("Etag", "W/"+etag) // the bytes differ from the origin's
	}
	if sw.coding == "" {
		delete(hdr, "Content-Encoding")
	} else {
		hdr["Content-Encoding"] = []string{sw.coding} // one line, whatever the origin sent
	}
	if !hasBody {
		hdr.Del("Content-Length")
		sw.ResponseWriter.WriteHeader(sw.status)
		return
	}
	if cl, err := strconv.ParseInt(hdr.Get("Content-Length"), 10, 64); err == nil && cl <= smallBody {
		sw.whole = held
		if sw.whole == nil {
			sw.whole = getWhole(cl)
		}
		return // header written in finish, with the new length
	}
	hdr.Del("Content-Length")
	sw.body, sw.err = scrub.NewBodyRewriter(sw.ResponseWriter, sw.coding, sw.m, sw.pub)
	sw.ResponseWriter.WriteHeader(sw.status)
	if held != nil {
		if len(*held) > 0 {
			_, _ = sw.writeBody(*held)
		}
		putWhole(held)
	}
}

// endSniff decides an untyped body from what has arrived so far.
func (sw *scrubWriter) endSniff() {
	sw.sniffing = false
	held := sw.whole
	sw.whole = nil
	if sw.h.rewritable(http.DetectContentType(*held)) {
		sw.startRewrite(true, held)
		return
	}
	sw.ResponseWriter.WriteHeader(sw.status)
	if len(*held) > 0 {
		_, sw.err = sw.ResponseWriter.Write(*held)
	}
	putWhole(held)
}

// putWhole gives a whole-body buffer back to the pool of its size (a
// sniffed buffer may have grown into the larger one).
func putWhole(b *[]byte) {
	*b = (*b)[:0]
	if cap(*b) <= pageBody {
		wholeBuffers[0].Put(b)
		return
	}
	wholeBuffers[1].Put(b)
}

// Write passes body bytes through the rewriter.
func (sw *scrubWriter) Write(p []byte) (int, error) {
	if !sw.wroteHeader {
		sw.WriteHeader(http.StatusOK)
	}
	if sw.discard {
		return len(p), nil
	}
	if sw.sniffing {
		n := min(len(p), sniffLen-len(*sw.whole))
		*sw.whole = append(*sw.whole, p[:n]...)
		if len(*sw.whole) < sniffLen {
			return len(p), nil
		}
		sw.endSniff()
		m, err := sw.Write(p[n:])
		return n + m, err
	}
	return sw.writeBody(p)
}

// writeBody is Write once the body's treatment is decided.
func (sw *scrubWriter) writeBody(p []byte) (int, error) {
	if sw.err != nil {
		return 0, sw.err
	}
	switch {
	case sw.whole != nil:
		if len(*sw.whole)+len(p) > smallBody {
			sw.err = errors.New("the origin sent more than its Content-Length")
			return 0, sw.err
		}
		*sw.whole = append(*sw.whole, p...)
		return len(p), nil
	case sw.body != nil:
		n, err := sw.body.Write(p)
		if err != nil {
			sw.err = err
		}
		return n, err
	}
	return sw.ResponseWriter.Write(p)
}

// ReadFrom overrides the wrapper's, which would bypass the rewriter.
func (sw *scrubWriter) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{sw}, r)
}

type writerOnly struct{ io.Writer }

// FlushError flushes what the rewriter can decide now, then the client
// connection (http.ResponseController finds it before Unwrap).
func (sw *scrubWriter) FlushError() error {
	if !sw.wroteHeader {
		sw.WriteHeader(http.StatusOK)
	}
	if sw.sniffing {
		sw.endSniff()
	}
	if sw.whole != nil || sw.discard {
		return nil
	}
	if sw.body != nil {
		if err := sw.body.Flush(); err != nil {
			return err
		}
	}
	return http.NewResponseController(sw.ResponseWriter).Flush()
}

// Flush is FlushError for callers that use http.Flusher.
func (sw *scrubWriter) Flush() { _ = sw.FlushError() }

// release gives the pooled buffers back and stops a rewrite that did not
// finish (reverse_proxy aborts a broken stream with a panic); it is
// deferred by ServeHTTP, so it runs on every exit path.
func (sw *scrubWriter) release() {
	if sw.body != nil {
		sw.body.Abort(http.ErrAbortHandler)
		sw.body = nil
	}
	if sw.whole != nil {
		putWhole(sw.whole)
		sw.whole = nil
	}
}

// finish ends the rewritten body and scrubs announced trailers.
func (sw *scrubWriter) finish() error {
	if sw.trailers {
		// reverse_proxy copies the origin's trailers into the header map
		// after the body: what is in the map now goes out as trailers
		sw.h.strip.Scrub(sw.h.ids.matcher.Load(), sw.Header(), sw.pub)
	}
	if sw.sniffing {
		sw.endSniff()
	}
	switch {
	case sw.whole != nil:
		return sw.finishWhole()
	case sw.body != nil:
		return sw.finishStream()
	}
	return nil
}

// finishWhole rewrites a small body and sends it with its exact length.
func (sw *scrubWriter) finishWhole() error {
	defer sw.release()
	if sw.err != nil {
		sw.h.logger.Warn("rewriting the origin's body failed", zap.String("request_id", requestID(sw.repl)), zap.Error(sw.err))
		sw.h.writeGeneric(sw.ResponseWriter, http.StatusBadGateway, sw.repl)
		return nil
	}
	body := *sw.whole
	out := rewrittenBuffers.Get().(*bytes.Buffer)
	defer func() { out.Reset(); rewrittenBuffers.Put(out) }()
	n, err := scrub.RewriteWhole(out, body, sw.coding, sw.m, sw.pub)
	if err != nil {
		sw.h.logger.Warn("rewriting the origin's body failed", zap.String("request_id", requestID(sw.repl)), zap.Error(err))
		sw.h.writeGeneric(sw.ResponseWriter, http.StatusBadGateway, sw.repl)
		return nil
	}
	if n > 0 {
		rewritesBody.Add(float64(n))
		body = out.Bytes()
	}
	sw.Header().Set("Content-Length", strconv.Itoa(len(body)))
	sw.ResponseWriter.WriteHeader(sw.status)
	_, _ = sw.ResponseWriter.Write(body)
	return nil
}

// finishStream ends a streamed body; a body that cannot be finished cuts
// the response short (the client has part of it).
func (sw *scrubWriter) finishStream() error {
	body := sw.body
	sw.body = nil
	if sw.err != nil {
		body.Abort(sw.err)
		return nil
	}
	err := body.Close()
	if n := body.Matches(); n > 0 {
		rewritesBody.Add(float64(n))
	}
	if err != nil {
		sw.h.logger.Warn("rewriting the origin's body failed", zap.String("request_id", requestID(sw.repl)), zap.Error(err))
		if errors.Is(err, http.ErrAbortHandler) {
			return nil
		}
		panic(http.ErrAbortHandler)
	}
	return nil
}
