package proxyv2

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

func TestClientPoolsAreBoundedAndReaped(t *testing.T) {
	base := &http.Transport{DialContext: (&net.Dialer{}).DialContext}
	pools := newClientPools(base, 3, 50*time.Millisecond)
	defer pools.close()
	first := pools.get([]byte("header-0"))
	for i := range 5 {
		pools.get([]byte("header-" + string(rune('0'+i))))
	}
	if n := pools.len(); n != 3 {
		t.Fatalf("%d pools, want the bound 3", n)
	}
	if again := pools.get([]byte("header-4")); again == first {
		t.Errorf("distinct headers share a transport")
	}
	if pools.get([]byte("header-4")) != pools.get([]byte("header-4")) {
		t.Errorf("the same header does not reuse its transport")
	}
	deadline := time.Now().Add(5 * time.Second)
	for pools.len() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle pools not reaped", pools.len())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPlaceholderValues(t *testing.T) {
	h := wire.Header{Version: 2, Command: wire.CommandProxy, Family: wire.FamilyUnix, SourceUnix: "/run/a.sock",
		TLVs: []wire.TLV{{Type: wire.TLVAuthority, Value: []byte("x.test")}, {Type: 0xE9, Value: []byte{1, 2}}}}
	cases := map[string]string{"version": "2", "command": "PROXY", "src": "/run/a.sock", "authority": "x.test",
		"tlv.0xE9": "0x0102", "tlv.e9": "0x0102", "tlv.0x01": "", "ssl.cn": "", "gcp.psc_id": ""}
	for name, want := range cases {
		if got, ok := placeholderValue(&h, name); !ok || got != want {
			t.Errorf("%s = %q, %v; want %q", name, got, ok, want)
		}
	}
	for _, unknown := range []string{"nope", "ssl.nope", "tlv.0x100", "tlv.zz"} {
		if _, ok := placeholderValue(&h, unknown); ok {
			t.Errorf("%s is known", unknown)
		}
	}
	if v, ok := placeholderValue(nil, "authority"); !ok || v != "" {
		t.Errorf("no header: %q %v", v, ok)
	}
	lb := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 41234}
	for _, c := range []struct {
		h    *wire.Header
		peer net.Addr
		key  string
		want string
		ok   bool
	}{
		{&h, lb, "l4.proxy.peer", "10.0.0.2:41234", true},
		{nil, lb, "l4.proxy.peer", "10.0.0.2:41234", true},
		{nil, nil, "l4.proxy.peer", "", true},
		{&h, lb, "l4.proxy.authority", "x.test", true},
		{&h, lb, "http.request.proxy.peer", "", false},
	} {
		v, ok := replacerFunc(c.h, c.peer, L4PlaceholderPrefix)(c.key)
		if ok != c.ok || (ok && v != c.want) {
			t.Errorf("%s = %v, %v; want %q, %v", c.key, v, ok, c.want, c.ok)
		}
	}
}

func TestPolicyProvisionErrors(t *testing.T) {
	cases := []struct {
		p    Policy
		want string
	}{
		{Policy{Trust: []string{"10.0.0.0/33"}}, `proxy_v2: trust: "10.0.0.0/33" is not an IP address or CIDR range`},
		{Policy{Trust: []string{"nope"}}, `proxy_v2: trust: "nope" is not an IP address or CIDR range`},
		{Policy{Trust: []string{"10.0.0.0/8"}, Untrusted: "allow"}, `proxy_v2: untrusted "allow": must be "reject" or "plain"`},
		{Policy{Trust: []string{"10.0.0.0/8"}, Versions: []int{3}}, "proxy_v2: versions: v3 is not a PROXY protocol version (v1 or v2)"},
		{Policy{Trust: []string{"10.0.0.0/8"}, MaxHeader: 50}, "proxy_v2: max_header 50: must be from 107 to 65551 bytes"},
		{Policy{Trust: []string{"10.0.0.0/8"}, MaxHeader: MaxHeaderLimit + 1}, "proxy_v2: max_header 65552: must be from 107 to 65551 bytes"},
		{Policy{Trust: []string{"10.0.0.0/8"}, Timeout: caddy.Duration(-time.Second)}, "proxy_v2: timeout -1s: must be positive"},
		{Policy{}, "every connection would be rejected"},
	}
	for _, c := range cases {
		err := c.p.provision("proxy_v2")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want it to mention %q", c.p, err, c.want)
		}
	}
	// host bits are allowed and masked, as Caddy's remote_ip does
	ok := Policy{Trust: []string{"10.1.2.3/8", "192.0.2.7", "::ffff:172.16.0.0/108"}, MaxHeader: MaxHeaderLimit}
	if err := ok.provision("proxy_v2"); err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{"192.0.2.7": true, "192.0.2.8": false, "::ffff:10.200.2.3": true, "10.9.9.9": true,
		"172.16.5.5": true, "172.32.0.1": false, "11.0.0.1": false} {
		if got := ok.trusts(&net.TCPAddr{IP: net.ParseIP(ip)}); got != want {
			t.Errorf("trusts(%s) = %v, want %v", ip, got, want)
		}
	}
}

// TestPolicyCaddyfileErrorsNameTheLine checks that the Caddyfile parser runs the
// rules Provision runs, after each option, so the error names its line.
func TestPolicyCaddyfileErrorsNameTheLine(t *testing.T) {
	for body, want := range map[string]string{
		"trust 10.0.0.0/8\nmax_header 70000":             "proxy_v2: max_header 70000: must be from 107 to 65551 bytes, at Testfile:3",
		"trust 10.0.0.0/8\nuntrusted plain\ntimeout -2s": "proxy_v2: timeout -2s: must be positive, at Testfile:4",
		"trust 10.0.0.0/33":                              `proxy_v2: trust: "10.0.0.0/33" is not an IP address or CIDR range, at Testfile:2`,
		"require_crc {\nx\n}\ntrust 10.0.0.0/8":          "proxy_v2: require_crc takes no block, at Testfile:2",
		"versions v2\nuntrusted reject":                  "proxy_v2: no trust ranges and untrusted \"reject\": every connection would be rejected, at Testfile:1",
	} {
		var p Policy
		err := p.unmarshalPolicyBlock(caddyfile.NewTestDispenser("proxy_v2 {\n" + body + "\n}"))
		if err == nil || err.Error() != want {
			t.Errorf("%q: error %v, want %q", body, err, want)
		}
	}
}

// FuzzPolicyCaddyfile feeds arbitrary option lines to the proxy_v2 block
// parser: it must never panic, every error must name a line, and what it
// accepts must pass the rules Provision runs.
func FuzzPolicyCaddyfile(f *testing.F) {
	for _, s := range []string{"trust 10.0.0.0/8\nuntrusted plain", "versions v1 v2\ntimeout 5s", "require_crc\nmax_header 4096",
		"trust private_ranges", "timeout -1s", "versions v3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var p Policy
		fuzzBlock(t, body, p.unmarshalPolicyBlock, func() error { return p.provision("proxy_v2") })
	})
}

// FuzzTransportCaddyfile feeds arbitrary option lines to the transport's
// block parser, which hands the http transport's options to Caddy's own
// parser: it must never panic, every error must name a line, and what it
// accepts must pass the rules Provision runs.
func FuzzTransportCaddyfile(f *testing.F) {
	for _, s := range []string{"tlv authority {host}\ncrc32c", "ssl\nmax_pools 3\npool_idle_timeout 1m", "dial_timeout 3s\nkeepalive off",
		"tls_trust_pool file {\n pem_file /x\n}\nssl", "proxy_protocol v2", "tlv 0xE5", "versions 3", "max_pools -1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var tr Transport
		fuzzBlock(t, body, tr.UnmarshalCaddyfile, tr.validate)
	})
}

// fuzzBlock parses `proxy_v2 { body }` with parse (skipping text the
// Caddyfile lexer refuses, before any parser of ours sees it): an error
// must name a line, and a block parse accepts must pass provision.
func fuzzBlock(t *testing.T, body string, parse func(*caddyfile.Dispenser) error, provision func() error) {
	tokens, err := caddyfile.Tokenize([]byte("proxy_v2 {\n"+body+"\n}"), "Testfile")
	if err != nil {
		return
	}
	if err := parse(caddyfile.NewDispenser(tokens)); err != nil {
		if !strings.Contains(err.Error(), "Testfile:") {
			t.Fatalf("error names no line: %v", err)
		}
		return
	}
	if err := provision(); err != nil {
		t.Fatalf("accepted a block that Provision refuses: %v", err)
	}
}

func TestTransportCaddyfileKeepsHTTPOptions(t *testing.T) {
	d := caddyfile.NewTestDispenser(`proxy_v2 {
		tlv authority {host}
		tlv 0xE5 {client_ip}
		ssl
		crc32c
		max_pools 10
		read_buffer 8KiB
		dial_timeout 3s
		keepalive 30s
	}`)
	var tr Transport
	if err := tr.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if len(tr.TLVs) != 2 || !tr.SSL || !tr.CRC32C || tr.MaxPools != 10 || tr.ReadBufferSize != 8192 ||
		time.Duration(tr.DialTimeout) != 3*time.Second || tr.KeepAlive == nil {
		t.Errorf("parsed %+v", tr)
	}
	for _, bad := range []string{"proxy_v2 {\n ssl {\n  x\n }\n}", "proxy_v2 {\n tlv crc32c x\n}", "proxy_v2 {\n tlv 0xZZ x\n}", "proxy_v2 {\n proxy_protocol v2\n}", "proxy_v2 {\n nonsense 1\n}"} {
		var tr Transport
		if err := tr.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSSLInfoFromPlaceholders(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "alice"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	repl := caddy.NewReplacer()
	if s := sslInfo(repl); s.Client != 0 || s.Verify != 1 {
		t.Errorf("plain HTTP: %+v", s)
	}
	repl.Set("http.request.tls.version", "tls1.3")
	repl.Set("http.request.tls.cipher_suite", "TLS_AES_128_GCM_SHA256")
	repl.Set("http.request.tls.client.certificate_der_base64", base64.StdEncoding.EncodeToString(der))
	s := sslInfo(repl)
	want := wire.SSL{Client: wire.SSLClientSSL | wire.SSLClientCertConn, Version: "TLSv1.3", CN: "alice",
		Cipher: "TLS_AES_128_GCM_SHA256", SigAlg: "ECDSA-SHA256", KeyAlg: "EC256"}
	if s != want {
		t.Errorf("got %+v, want %+v", s, want)
	}
}

// BenchmarkTransportHeader builds the header the transport writes for a
// request with an AUTHORITY TLV from a placeholder and a CRC32C, as each
// proxied request does to find its connection pool.
func BenchmarkTransportHeader(b *testing.B) {
	tr := Transport{TLVs: []TLVConfig{{Type: "authority", Value: "{http.request.host}", typ: wire.TLVAuthority}}, CRC32C: true}
	repl := caddy.NewReplacer()
	repl.Set("http.request.host", "shop.example")
	ctx := context.WithValue(context.Background(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 443})
	req := httptest.NewRequest(http.MethodGet, "http://shop.example/", nil).WithContext(ctx)
	req.RemoteAddr = "203.0.113.7:51234"
	var buf [headerBufSize]byte
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tr.header(req, buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
}
