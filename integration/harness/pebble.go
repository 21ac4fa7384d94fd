package harness

import (
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/letsencrypt/challtestsrv"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// Pebble is Let's Encrypt's test CA running in the test process, validating
// challenges on 127.0.0.1 (or where DNS says) at the given HTTP and HTTPS
// ports; every name resolves to 127.0.0.1 through challtestsrv's DNS server
// unless DNS says otherwise.
type Pebble struct {
	// Dir is the ACME directory URL.
	Dir string
	// Root is the PEM file of the ACME server's own TLS certificate (for
	// `trusted_roots` / `acme_ca_root`).
	Root string
	// DNS is the test DNS server Pebble resolves names with.
	DNS *challtestsrv.ChallSrv
	log *lockedBuffer
}

// Log returns what Pebble logged so far.
func (p *Pebble) Log() string { return p.log.String() }

// StartPebble runs Pebble until the test ends. wrap, when not nil, wraps
// Pebble's ACME handler (to count requests).
func StartPebble(t testing.TB, httpPort, httpsPort int, wrap func(http.Handler) http.Handler) *Pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	p := &Pebble{log: &lockedBuffer{}}
	logger := log.New(p.log, "pebble ", log.LstdFlags)

	dnsAddr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	dns, err := challtestsrv.New(challtestsrv.Config{DNSAddrs: []string{dnsAddr}, Log: log.New(io.Discard, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	dns.SetDefaultDNSIPv4("127.0.0.1")
	dns.SetDefaultDNSIPv6("")
	go dns.Run()
	t.Cleanup(dns.Shutdown)
	WaitListening(t, dnsAddr, 5*time.Second)
	p.DNS = dns

	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "test"}})
	validator := va.New(logger, httpPort, httpsPort, false, dnsAddr, store)
	front := wfe.New(logger, store, validator, authority, nil, false, false, 1, 1)
	handler := front.Handler()
	if wrap != nil {
		handler = wrap(handler)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p.Dir = srv.URL + "/dir"
	p.Root = filepath.Join(t.TempDir(), "pebble-wfe.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(p.Root, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
