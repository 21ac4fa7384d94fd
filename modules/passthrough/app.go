package passthrough

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(App{})
	for _, n := range []string{"tcp", "tcp4", "tcp6"} {
		caddy.RegisterNetwork(networkPrefix+n, listen)
		caddyhttp.RegisterNetworkHTTP3(networkPrefix+n, strings.Replace(n, "tcp", "udp", 1))
	}
}

// networkPrefix marks the listen addresses the app took over: the HTTP
// server listens on "passthrough-tcp/:443" and gets its listener from this
// package, with the app's wrappers in front.
const networkPrefix = "passthrough-"

// App puts listener wrappers in front of the HTTP servers that listen on the
// HTTPS port, before the servers' own wrappers and Caddy's TLS. It is what
// the Caddyfile `passthrough` global option generates: a global option can
// only add an app, not change the servers the site blocks produce, so the app
// does it when it is provisioned. It changes the network of those servers'
// listen addresses (":443" becomes "passthrough-tcp/:443"); the network,
// registered with caddy.RegisterNetwork, opens the socket through Caddy's
// listener pool as usual and wraps it with ListenerWrappers. The running
// configuration (GET /config) keeps the addresses as written.
//
// The order of a connection through the chain is: the app's
// listener_wrappers in order (typically proxy_v2, then stick, then the
// passthrough routes), then the server's own listener_wrappers, then TLS.
type App struct {
	// ListenerWrappers wrap the socket of each HTTPS server, first to last.
	ListenerWrappersRaw []json.RawMessage `json:"listener_wrappers,omitempty" caddy:"namespace=caddy.listeners inline_key=wrapper"`

	// Servers limits the app to these HTTP servers (names in apps.http.servers).
	// Default: every server with a TCP listen address on the HTTPS port.
	Servers []string `json:"servers,omitempty"`

	chains map[string][]caddy.ListenerWrapper // by rewritten listen address
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "passthrough",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision takes over the HTTPS listen addresses of the HTTP servers and
// loads the wrappers for each of them. The wrappers are loaded once per
// server with that server in the context, as the server's own listener
// wrappers are, so that they can register with it (proxy_v2 registers a
// ConnContext that makes its placeholders work in HTTP handlers).
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.chains = map[string][]caddy.ListenerWrapper{}
	raw := a.ListenerWrappersRaw
	httpAny, err := ctx.AppIfConfigured("http")
	if err != nil {
		return fmt.Errorf("passthrough: no HTTP server to put passthrough in front of (add a site on the HTTPS port): %v", err)
	}
	httpApp := httpAny.(*caddyhttp.App)
	httpsPort := httpApp.HTTPSPort
	if httpsPort == 0 {
		httpsPort = caddyhttp.DefaultHTTPSPort
	}
	for _, name := range a.Servers {
		if _, ok := httpApp.Servers[name]; !ok {
			return fmt.Errorf("passthrough: servers: no HTTP server named %q", name)
		}
	}
	for name, srv := range httpApp.Servers {
		if len(a.Servers) > 0 && !slices.Contains(a.Servers, name) {
			continue
		}
		var wrappers []caddy.ListenerWrapper
		for i, addr := range srv.Listen {
			na, err := caddy.ParseNetworkAddress(addr)
			if err != nil || !slices.Contains([]string{"tcp", "tcp4", "tcp6"}, na.Network) {
				continue
			}
			if na.StartPort != uint(httpsPort) || na.EndPort != na.StartPort {
				continue
			}
			if wrappers == nil {
				if wrappers, err = a.loadWrappers(ctx, srv, raw); err != nil {
					return err
				}
			}
			srv.Listen[i] = networkPrefix + na.Network + "/" + net.JoinHostPort(na.Host, strconv.Itoa(httpsPort))
			a.chains[srv.Listen[i]] = wrappers
			a.logger.Info("passthrough in front of HTTP server", zap.String("server", name), zap.String("address", addr))
		}
	}
	if len(a.chains) == 0 {
		return fmt.Errorf("passthrough: no HTTP server listens on the HTTPS port %d (add a site there, e.g. `example.com { ... }`)", httpsPort)
	}
	return nil
}

// loadWrappers loads the wrapper modules for one HTTP server.
func (a *App) loadWrappers(ctx caddy.Context, srv *caddyhttp.Server, raw []json.RawMessage) ([]caddy.ListenerWrapper, error) {
	sctx := ctx
	sctx.Context = context.WithValue(ctx.Context, caddyhttp.ServerCtxKey, srv)
	sctx.Context = context.WithValue(sctx.Context, siteNamesCtxKey, siteNames(srv))
	a.ListenerWrappersRaw = slices.Clone(raw)
	vals, err := sctx.LoadModule(a, "ListenerWrappersRaw")
	if err != nil {
		return nil, fmt.Errorf("passthrough: loading listener wrappers: %v", err)
	}
	wrappers := []caddy.ListenerWrapper{}
	for _, v := range vals.([]any) {
		wrappers = append(wrappers, v.(caddy.ListenerWrapper))
	}
	return wrappers, nil
}

// siteNamesCtxKey gives the passthrough handlers of a server the host
// names of its sites.
const siteNamesCtxKey caddy.CtxKey = "passthrough.site_names"

// siteNames lists the host names the server's routes match (the site
// addresses of a Caddyfile), as automatic HTTPS finds them.
func siteNames(srv *caddyhttp.Server) []string {
	var names []string
	for _, r := range srv.Routes {
		for _, set := range r.MatcherSets {
			for _, m := range set {
				if hm, ok := m.(*caddyhttp.MatchHost); ok {
					names = append(names, *hm...)
				}
			}
		}
	}
	return names
}

// Start does nothing: the HTTP servers open the listeners.
func (*App) Start() error { return nil }

// Stop does nothing: the HTTP servers close the listeners, and relayed
// connections end on their own.
func (*App) Stop() error { return nil }

// listen is the ListenerFunc of the passthrough networks: it opens the TCP
// socket through Caddy's listener pool and wraps it with the app's
// wrappers. ctx is the HTTP app's caddy.Context, which leads to the app of
// the same configuration.
func listen(ctx context.Context, network, host, portRange string, portOffset uint, cfg net.ListenConfig) (any, error) {
	cctx, ok := ctx.(caddy.Context)
	if !ok {
		return nil, fmt.Errorf("network %s: listening outside of a Caddy config", network)
	}
	appAny, err := cctx.AppIfConfigured("passthrough")
	if err != nil {
		return nil, fmt.Errorf("network %s: %v", network, err)
	}
	app := appAny.(*App)
	key := network + "/" + net.JoinHostPort(host, portRange)
	chain, ok := app.chains[key]
	if !ok {
		return nil, fmt.Errorf("network %s: no passthrough chain for %s", network, key)
	}
	inner := strings.TrimPrefix(network, networkPrefix)
	na, err := caddy.ParseNetworkAddress(inner + "/" + net.JoinHostPort(host, portRange))
	if err != nil {
		return nil, err
	}
	// TCP keepalive (four setsockopt calls per connection) only for the
	// connections the chain hands to the HTTP server, which asked for it:
	// a relayed connection ends by its idle timeout
	keepAlive := cfg.KeepAliveConfig
	cfg.KeepAlive, cfg.KeepAliveConfig = -1, net.KeepAliveConfig{}
	lnAny, err := na.Listen(ctx, portOffset, cfg)
	if err != nil {
		return nil, err
	}
	ln := lnAny.(net.Listener)
	for _, w := range chain {
		ln = w.WrapListener(ln)
	}
	if keepAlive.Enable {
		ln = keepAliveListener{Listener: ln, config: keepAlive}
	}
	return ln, nil
}

// keepAliveListener turns on TCP keepalive for the connections it
// accepts, on the socket beneath their wrappers.
type keepAliveListener struct {
	net.Listener
	config net.KeepAliveConfig
}

// Accept returns the next connection with keepalive on.
func (l keepAliveListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	for inner := c; inner != nil; {
		if tc, ok := inner.(*net.TCPConn); ok {
			_ = tc.SetKeepAliveConfig(l.config)
			break
		}
		nc, ok := inner.(netConner)
		if !ok {
			break
		}
		inner = nc.NetConn()
	}
	return c, nil
}

// Interface guards
var (
	_ caddy.App         = (*App)(nil)
	_ caddy.Provisioner = (*App)(nil)
)
