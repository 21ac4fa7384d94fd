package proxyv2_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rampart-edge/caddy-rampart/integration/harness"
	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

// dialFrom connects to addr from a chosen loopback source address, so that
// a test can be a trusted or an untrusted peer.
func dialFrom(t testing.TB, source, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, source, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// v2Header builds a v2 header for a client at src talking to dst.
func v2Header(t testing.TB, src, dst string, crc bool, tlvs ...wire.TLV) []byte {
	t.Helper()
	h := wire.Header{Command: wire.CommandProxy, Source: netip.MustParseAddrPort(src), Destination: netip.MustParseAddrPort(dst), TLVs: tlvs}
	b, err := h.AppendV2(nil, crc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// request sends prefix and a GET in one write on c and returns the response,
// or an error when the server closed the connection without one.
func request(c net.Conn, prefix []byte, host string) (*http.Response, string, error) {
	req := fmt.Sprintf("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
	if _, err := c.Write(append(append([]byte(nil), prefix...), req...)); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

// fields parses "k=v k=v" response bodies.
func fields(body string) map[string]string {
	out := map[string]string{}
	for _, f := range strings.Fields(body) {
		k, v, _ := strings.Cut(f, "=")
		out[k] = v
	}
	return out
}

// expectDropped asserts that the server closed c without answering.
func expectDropped(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if n > 0 {
		t.Errorf("%s: got an answer %q; want the connection dropped", what, buf[:n])
		return
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("%s: connection still open after 5s; want it dropped", what)
	}
}

var metricLine = regexp.MustCompile(`(?m)^rampart_proxy_headers_total\{result="([a-z_]+)"\} ([0-9.e+]+)$`)

// headerCounts reads rampart_proxy_headers_total from Caddy's admin metrics.
func headerCounts(t testing.TB, c *harness.Caddy) map[string]float64 {
	t.Helper()
	status, body := c.AdminRequest(http.MethodGet, "/metrics", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", status, body)
	}
	out := map[string]float64{}
	for _, m := range metricLine.FindAllStringSubmatch(body, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		out[m[1]] = v
	}
	if len(out) == 0 {
		t.Fatalf("no rampart_proxy_headers_total in /metrics")
	}
	return out
}

// pki is a throwaway CA with a server and a client certificate on disk.
type pki struct {
	dir                    string
	caPEM                  []byte
	pool                   *x509.CertPool
	serverCert, clientCert tls.Certificate
	serverPEMFile, caFile  string
}

func newPKI(t testing.TB, serverName, clientCN string) *pki {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Rampart Test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, dns []string) (tls.Certificate, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
			NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		pemBytes := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})...)
		cert, err := tls.X509KeyPair(pemBytes, pemBytes)
		if err != nil {
			t.Fatal(err)
		}
		return cert, pemBytes
	}
	p := &pki{dir: t.TempDir(), pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	var serverPEM []byte
	p.serverCert, serverPEM = issue(2, serverName, x509.ExtKeyUsageServerAuth, []string{serverName})
	p.clientCert, _ = issue(3, clientCN, x509.ExtKeyUsageClientAuth, nil)
	p.serverPEMFile = filepath.Join(p.dir, "server.pem")
	p.caFile = filepath.Join(p.dir, "ca.pem")
	if err := os.WriteFile(p.serverPEMFile, serverPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.caFile, p.caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
