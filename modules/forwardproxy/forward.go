package forwardproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rampart-edge/caddy-rampart/internal/netaddr"
	"github.com/rampart-edge/caddy-rampart/modules/forwardproxy/egress"
)

// decisionKey carries an allowed decision to the transport's dialer.
type decisionKey struct{}

type dialTarget struct {
	decision egress.Decision
	ex       *exchange
}

// newTransport returns the transport for absolute-form requests: it dials
// only the addresses of the request's decision, never resolving.
func (fp *ForwardProxy) newTransport() *http.Transport {
	return &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			t, ok := ctx.Value(decisionKey{}).(*dialTarget)
			if !ok {
				return nil, errors.New("forward_proxy: dial without a decision")
			}
			return fp.dial(ctx, t.decision, t.ex.port, t.ex)
		},
		TLSHandshakeTimeout:    time.Duration(fp.DialTimeout),
		MaxResponseHeaderBytes: int64(fp.MaxHeaderSize),
		DisableCompression:     true,
		IdleConnTimeout:        90 * time.Second,
		MaxIdleConnsPerHost:    8,
	}
}

// hopHeaders are removed from forwarded requests and responses (RFC 9110
// section 7.6.1), with Proxy-Connection, which clients still send.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// clientHeaders reveal the client or the proxy; hide_client removes them.
var clientHeaders = []string{"Via", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "X-Real-Ip"}

// removeHopHeaders removes the hop-by-hop headers and those the Connection
// header names (read from both Connection and Proxy-Connection), and every
// Proxy-* header.
func removeHopHeaders(h http.Header) {
	for _, field := range []string{"Connection", "Proxy-Connection"} {
		for _, v := range h[field] {
			for name := range strings.SplitSeq(v, ",") {
				if name = textproto.TrimString(name); name != "" {
					h.Del(name)
				}
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
	for name := range h {
		if strings.HasPrefix(name, "Proxy-") {
			delete(h, name)
		}
	}
}

// forward sends an absolute-form request to the decided destination and
// copies the response back.
func (fp *ForwardProxy) forward(w http.ResponseWriter, r *http.Request, d egress.Decision, ex *exchange) error {
	ctx := context.WithValue(r.Context(), decisionKey{}, &dialTarget{decision: d, ex: ex})
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.Host = r.URL.Host // the URI decides, never a Host header
	out.Close = false
	if r.ContentLength == 0 {
		out.Body = nil
	}
	removeHopHeaders(out.Header)
	if fp.hideClient() {
		for _, name := range clientHeaders {
			out.Header.Del(name)
		}
	} else if ip, ok := netaddr.HostIP(r.RemoteAddr); ok {
		out.Header.Add("X-Forwarded-For", ip.String())
		out.Header.Add("Via", "1.1 rampart")
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header.Set("User-Agent", "") // Go would add its own
	}
	if out.Body != nil {
		// the transport sends the body on a goroutine of its own, which
		// may still read it after the response came; it always closes
		// the body in the end, and the request's body must not be read
		// once the handler returned
		counted := &countingReader{r: out.Body, closed: make(chan struct{})}
		out.Body = counted
		defer func() {
			<-counted.closed
			ex.up = counted.n.Load()
		}()
	}
	resp, err := fp.transport.RoundTrip(out)
	if err != nil {
		if r.Context().Err() != nil {
			return nil // the client went away
		}
		return fp.unreachable(w, ex, err)
	}
	defer resp.Body.Close()
	removeHopHeaders(resp.Header)
	for k, vv := range resp.Header {
		w.Header()[k] = vv
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			written, werr := w.Write(buf[:n])
			ex.down += int64(written)
			if werr != nil {
				return nil
			}
			if resp.ContentLength < 0 {
				_ = rc.Flush()
			}
		}
		if rerr != nil {
			if rerr != io.EOF {
				fp.logger.Debug("forward proxy response ended early", ex.fields()...)
			}
			return nil
		}
	}
}

// countingReader counts the request body bytes forwarded, and tells when
// the transport is done with the body.
type countingReader struct {
	r      io.ReadCloser
	n      atomic.Int64
	once   sync.Once
	closed chan struct{}
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Close closes the body and reports the transport done with it.
func (c *countingReader) Close() error {
	err := c.r.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}
