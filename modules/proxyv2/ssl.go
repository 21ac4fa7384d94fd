package proxyv2

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

// sslInfo describes the client's TLS connection as the SSL TLV does. The
// upstream request reverse_proxy hands a transport carries no TLS state,
// so it comes from the request's placeholders. Verify is 0 when the client
// presented a certificate: Caddy completes a handshake with a client
// certificate only if it passes the site's client_auth verification (modes
// `request` and `require` do not verify; see the README).
func sslInfo(repl *caddy.Replacer) wire.SSL {
	s := wire.SSL{Verify: 1}
	if repl == nil {
		return s
	}
	version, _ := repl.GetString("http.request.tls.version")
	if version == "" {
		return s
	}
	s.Client = wire.SSLClientSSL
	s.Version = tlsVersionName(version)
	s.Cipher, _ = repl.GetString("http.request.tls.cipher_suite")
	der, _ := repl.GetString("http.request.tls.client.certificate_der_base64")
	raw, err := base64.StdEncoding.DecodeString(der)
	if der == "" || err != nil {
		return s
	}
	cert, err := x509.ParseCertificate(raw)
	if err != nil {
		return s
	}
	s.Client |= wire.SSLClientCertConn
	s.Verify = 0
	s.CN = cert.Subject.CommonName
	s.SigAlg = cert.SignatureAlgorithm.String()
	s.KeyAlg = keyAlgName(cert)
	return s
}

// tlsVersionName turns Caddy's "tls1.3" into HAProxy's and OpenSSL's
// "TLSv1.3".
func tlsVersionName(caddyName string) string {
	switch caddyName {
	case "tls1.0":
		return "TLSv1"
	case "tls1.1", "tls1.2", "tls1.3":
		return "TLSv" + strings.TrimPrefix(caddyName, "tls")
	}
	return caddyName
}

// keyAlgName names the certificate's key the way HAProxy does: RSA2048,
// EC256, ED25519.
func keyAlgName(cert *x509.Certificate) string {
	switch key := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		return "RSA" + strconv.Itoa(key.N.BitLen())
	case *ecdsa.PublicKey:
		return "EC" + strconv.Itoa(key.Curve.Params().BitSize)
	case ed25519.PublicKey:
		return "ED25519"
	}
	return cert.PublicKeyAlgorithm.String()
}
