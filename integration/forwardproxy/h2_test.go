package forwardproxy_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// h2Stream is one HTTP/2 CONNECT stream as a net.Conn.
type h2Stream struct {
	net.Conn // addresses and deadlines of the connection to the proxy
	r        io.ReadCloser
	w        *io.PipeWriter
}

func (s *h2Stream) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *h2Stream) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *h2Stream) Close() error                { s.w.Close(); return s.r.Close() }

// h2Dial opens an HTTP/2 connection to the HTTPS proxy (ALPN h2 only).
func h2Dial(t testing.TB, proxy string, proxyPool *x509.CertPool) *http2.ClientConn {
	t.Helper()
	raw, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", proxy, &tls.Config{ServerName: "proxy.test", RootCAs: proxyPool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if p := raw.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("the proxy negotiated %q, not h2", p)
	}
	cc, err := (&http2.Transport{}).NewClientConn(raw)
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

// h2Open sends CONNECT target on a new stream and returns the response and
// the stream.
func h2Open(t testing.TB, cc *http2.ClientConn, target string, header http.Header) (*http.Response, *h2Stream) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodConnect, "https://"+target, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = target
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatalf("HTTP/2 CONNECT %s: %v", target, err)
	}
	return resp, &h2Stream{r: resp.Body, w: pw}
}

// h2Connect opens an HTTP/2 CONNECT stream to target through the HTTPS
// proxy (127.0.0.1 needs no credentials there), talks TLS to the origin in
// it and returns the body of GET /h2.
func h2Connect(t testing.TB, proxy string, proxyPool *x509.CertPool, target string, originPool *x509.CertPool) string {
	t.Helper()
	cc := h2Dial(t, proxy, proxyPool)
	resp, stream := h2Open(t, cc, target, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP/2 CONNECT %s: %s", target, resp.Status)
	}
	defer stream.Close()
	host, _, _ := net.SplitHostPort(target)
	tc := tls.Client(stream, &tls.Config{ServerName: host, RootCAs: originPool})
	req, _ := http.NewRequest(http.MethodGet, "https://"+host+"/h2", nil)
	if err := req.Write(tc); err != nil {
		t.Fatal(err)
	}
	r, err := http.ReadResponse(bufio.NewReader(tc), req)
	if err != nil {
		t.Fatal(err)
	}
	return readBody(t, r)
}
