package harness

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile" // the Caddyfile adapter
	_ "github.com/caddyserver/caddy/v2/modules/standard"          // what cmd/caddy has

	_ "github.com/rampart-edge/caddy-rampart" // every Rampart module
)

// caddyMu serialises in-process Caddy instances: Caddy keeps one running
// config per process.
var caddyMu sync.Mutex

// Caddy is an in-process Caddy started by RunCaddyfile. Its admin
// endpoint listens on a free loopback port.
type Caddy struct {
	t     testing.TB
	Admin string // host:port of the admin endpoint
	store string
}

// RunCaddyfile adapts a Caddyfile and runs it in this process until the test
// ends. The admin endpoint, storage and local CA trust are set for tests.
func RunCaddyfile(t testing.TB, caddyfile string) *Caddy {
	t.Helper()
	c := newCaddy(t)
	c.LoadCaddyfile(caddyfile)
	return c
}

func newCaddy(t testing.TB) *Caddy {
	t.Helper()
	caddyMu.Lock()
	// Not t.TempDir: certificate work that Caddy started in the background
	// may still write here for a moment after Stop.
	store, err := os.MkdirTemp("", "rampart-caddy-storage-")
	if err != nil {
		caddyMu.Unlock()
		t.Fatal(err)
	}
	c := &Caddy{t: t, Admin: fmt.Sprintf("127.0.0.1:%d", FreePort(t)), store: store}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Logf("stopping caddy: %v", err)
		}
		caddyMu.Unlock()
		for range 20 {
			if os.RemoveAll(store) == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	return c
}

// Adapt turns a Caddyfile into JSON or fails the test.
func Adapt(t testing.TB, caddyfile string) []byte {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	out, warnings, err := adapter.Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapting the Caddyfile: %v\n%s", err, caddyfile)
	}
	for _, w := range warnings {
		t.Logf("adapt warning: %s", w.String())
	}
	return out
}

// LoadCaddyfile replaces the running config with an adapted Caddyfile (a
// graceful reload, as `caddy reload` does).
func (c *Caddy) LoadCaddyfile(caddyfile string) {
	c.t.Helper()
	c.LoadJSON(Adapt(c.t, caddyfile))
}

// LoadJSON replaces the running config (a graceful reload) and returns once
// the old config's servers no longer accept connections.
func (c *Caddy) LoadJSON(config []byte) {
	c.t.Helper()
	config = c.prepare(config)
	if err := caddy.Load(config, true); err != nil {
		c.t.Fatalf("loading config: %v\n%s", err, config)
	}
	c.awaitOldServersClosed(config)
}

// TryLoadJSON is LoadJSON that returns the load error instead of failing.
func (c *Caddy) TryLoadJSON(config []byte) error {
	return caddy.Load(c.prepare(config), true)
}

// prepare points admin, storage and the local CA of a config at test values.
func (c *Caddy) prepare(config []byte) []byte {
	c.t.Helper()
	var cfg map[string]any
	if err := json.Unmarshal(config, &cfg); err != nil {
		c.t.Fatalf("config is not JSON: %v", err)
	}
	cfg["admin"] = map[string]any{"listen": c.Admin}
	cfg["storage"] = map[string]any{"module": "file_system", "root": c.store}
	local := child(child(child(child(cfg, "apps"), "pki"), "certificate_authorities"), "local")
	local["install_trust"] = false
	if os.Getenv("RAMPART_TEST_LOGS") != "1" {
		// Caddy's own log goes to the test log only on request; access
		// logs a test configures still go where it says.
		child(child(child(cfg, "logging"), "logs"), "default")["writer"] = map[string]any{"output": "discard"}
	}
	out, err := json.Marshal(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// child returns m[key] as an object, creating it when absent.
func child(m map[string]any, key string) map[string]any {
	v, _ := m[key].(map[string]any)
	if v == nil {
		v = map[string]any{}
		m[key] = v
	}
	return v
}

// AdminRequest sends a request to the admin endpoint and returns the status
// and body.
func (c *Caddy) AdminRequest(method, path string, body io.Reader) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, "http://"+c.Admin+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	// One connection per request, as `caddy reload` and curl do: a reload
	// replaces the admin server, and a kept-alive connection would reach
	// the old one while it shuts down.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// Reload posts a Caddyfile to the admin endpoint's /load, as a user would,
// and returns once the old config's servers no longer accept connections.
func (c *Caddy) Reload(caddyfile string) {
	c.t.Helper()
	config := c.prepare(Adapt(c.t, caddyfile))
	status, body := c.AdminRequest(http.MethodPost, "/load", strings.NewReader(string(config)))
	if status != http.StatusOK {
		c.t.Fatalf("reload: %d %s", status, body)
	}
	c.awaitOldServersClosed(config)
}

// awaitOldServersClosed waits until no listener of config is still shared
// with the config it replaced. /load answers before the old servers shut
// down (Caddy stops the old admin endpoint and the old HTTP servers on
// goroutines), so a connection opened right after it could still reach the
// old config. Kept-alive client connections are closed by the old servers'
// shutdown; clients reconnect to the new ones.
func (c *Caddy) awaitOldServersClosed(config []byte) {
	c.t.Helper()
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Listen []string `json:"listen"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(config, &cfg); err != nil {
		c.t.Fatal(err)
	}
	listens := []string{c.Admin}
	for _, srv := range cfg.Apps.HTTP.Servers {
		listens = append(listens, srv.Listen...)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, listen := range listens {
		addr, err := caddy.ParseNetworkAddress(listen)
		if err != nil {
			c.t.Fatalf("listen address %q: %v", listen, err)
		}
		for offset := range addr.PortRangeSize() {
			for caddy.ListenerUsage(addr.Network, addr.JoinHostPort(offset)) > 1 {
				if time.Now().After(deadline) {
					c.t.Fatalf("reload: the old config still listens on %s after 5s", addr.JoinHostPort(offset))
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
}
