package hideorigin

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/modules/hideorigin/scrub"
)

// scrubWriter wraps the response writer: headers are scrubbed when they are
// written (so Caddy's own Via, added by reverse_proxy to the response
// writer's header map, is seen and removed), and text bodies go through the
// streaming rewriter.
type scrubWriter struct {
	caddyhttp.ResponseWriterWrapper
	h    *HideOrigin
	r    *http.Request
	repl *caddy.Replacer
	pub  *scrub.Public

	wroteHeader bool
	trailers    bool // the response announced trailers: scrub them at the end
	status      int
	discard     bool // the body is not passed on (generic error page, range refetch)
	retryRange  bool
	retried     bool

	body     *scrub.BodyRewriter
	buffered *bytes.Buffer // small Content-Length bodies, rewritten in memory
	err      error
}

func (h *HideOrigin) newWriter(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, pub *scrub.Public) *scrubWriter {
	return &scrubWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, h: h, r: r, repl: repl, pub: pub}
}

// WriteHeader scrubs the headers and decides what happens to the body.
func (sw *scrubWriter) WriteHeader(status int) {
	if sw.wroteHeader {
		return
	}
	h := sw.h
	upstream, _ := sw.repl.GetString("http.reverse_proxy.upstream.hostport")
	m := h.learn(upstream)
	hdr := sw.Header()
	if n := h.strip.Scrub(m, hdr, sw.pub); n > 0 {
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
	hasBody := sw.r.Method != http.MethodHead && status != http.StatusNoContent && status != http.StatusNotModified
	if !h.rewritable(ct) || m.Empty() {
		sw.ResponseWriter.WriteHeader(status)
		return
	}
	if status == http.StatusPartialContent && !sw.retried && (sw.r.Method == http.MethodGet) {
		sw.retryRange, sw.discard = true, true
		return
	}
	hdr.Del("Accept-Ranges")
	if etag := hdr.Get("Etag"); etag != "" && !strings.HasPrefix(etag, "W/") {
		hdr.Set("Etag", "W/"+etag) // the bytes differ from the origin's
	}
	if !hasBody {
		hdr.Del("Content-Length")
		sw.ResponseWriter.WriteHeader(status)
		return
	}
	enc := hdr.Get("Content-Encoding")
	if !scrub.CanDecode(enc) {
		// fail closed: a body that cannot be inspected is not passed on
		sw.discard = true
		h.logger.Error("origin sent a content coding hide_origin cannot decode; answered 502",
			zap.String("request_id", requestID(sw.repl)), zap.String("content_encoding", enc))
		metricActions.WithLabelValues("undecodable").Inc()
		h.writeGeneric(sw.ResponseWriter, http.StatusBadGateway, sw.repl)
		return
	}
	cl, clErr := strconv.ParseInt(hdr.Get("Content-Length"), 10, 64)
	if clErr == nil && cl <= smallBody && (enc == "" || strings.EqualFold(enc, "identity")) {
		sw.buffered = bytes.NewBuffer(make([]byte, 0, cl+cl/8+64))
		sw.body, _ = scrub.NewBodyRewriter(sw.buffered, enc, m, sw.pub)
		return // header written in finish, with the new length
	}
	hdr.Del("Content-Length")
	sw.body, sw.err = scrub.NewBodyRewriter(sw.ResponseWriter, enc, m, sw.pub)
	sw.ResponseWriter.WriteHeader(status)
}

// Write passes body bytes through the rewriter.
func (sw *scrubWriter) Write(p []byte) (int, error) {
	if !sw.wroteHeader {
		sw.WriteHeader(http.StatusOK)
	}
	if sw.discard {
		return len(p), nil
	}
	if sw.err != nil {
		return 0, sw.err
	}
	if sw.body != nil {
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
	if sw.buffered != nil || sw.discard {
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

// finish ends the rewritten body and scrubs announced trailers.
func (sw *scrubWriter) finish() error {
	if sw.trailers {
		// reverse_proxy copies the origin's trailers into the header map
		// after the body: what is in the map now goes out as trailers
		sw.h.strip.Scrub(sw.h.ids.matcher.Load(), sw.Header(), sw.pub)
	}
	if sw.body == nil {
		return nil
	}
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
		if sw.buffered != nil {
			sw.h.writeGeneric(sw.ResponseWriter, http.StatusBadGateway, sw.repl)
			return nil
		}
		// the client has part of a body: cut the response short
		if errors.Is(err, http.ErrAbortHandler) {
			return nil
		}
		panic(http.ErrAbortHandler)
	}
	if sw.buffered != nil {
		sw.Header().Set("Content-Length", strconv.Itoa(sw.buffered.Len()))
		sw.ResponseWriter.WriteHeader(sw.status)
		_, _ = sw.ResponseWriter.Write(sw.buffered.Bytes())
	}
	return nil
}
