// Package forwardproxy is the forward_proxy HTTP handler: an egress proxy
// (CONNECT over HTTP/1.1 and HTTP/2, absolute-form HTTP) that decides every
// destination before it dials, and is never an open relay: nobody may use
// it unless allowed by source or credentials, and the proxy's own network
// (loopback, private, link-local, CGNAT, multicast, cloud metadata) is
// refused unless explicitly allowed. The destination policy lives in the
// egress engine; tunnels are relayed by the passthrough engine's Relay
// (splice, half-close, idle timeout, byte counts).
package forwardproxy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/internal/netaddr"
	"github.com/rampart-edge/caddy-rampart/modules/forwardproxy/egress"
)

func init() {
	caddy.RegisterModule(ForwardProxy{})
}

// Defaults of the options.
const (
	defaultDialTimeout       = 10 * time.Second
	defaultIdleTimeout       = 5 * time.Minute
	defaultMaxHeaderSize     = 64 << 10
	defaultBlockListInterval = 5 * time.Second
	defaultRealm             = "proxy"
)

// ForwardProxy (`forward_proxy`) proxies CONNECT requests (HTTP/1.1 and
// HTTP/2) and absolute-form requests (GET http://host/path) for clients
// allowed by source address or Proxy-Authorization credentials, to
// destinations its policy allows; every other request goes to the next
// handler, so sites on the same listener keep working. Each destination is
// decided before any connection: port, name, then every address the name
// resolves to; the addresses that passed are the ones dialled (no second
// lookup). Refusals are 403 (407 for missing or wrong credentials) with a
// short text naming the rule.
type ForwardProxy struct {
	// AllowSource lists the client ranges (CIDR or single address, as
	// Caddy's remote_ip) that may use the proxy without credentials.
	// Default: nobody. The client is the connection's peer (r.RemoteAddr,
	// which a proxy_v2 listener sets from the PROXY header).
	AllowSource []string `json:"allow_source,omitempty"`

	// BasicAuth lets clients in with Proxy-Authorization: Basic
	// credentials, checked by Caddy's own basic authentication (accounts
	// with bcrypt or argon2id hashes, as Caddy's basic_auth). Its realm
	// (default "proxy") is sent in Proxy-Authenticate. The hash cache is
	// always on: every tunnel authenticates. The user becomes
	// {http.auth.user.id}.
	BasicAuth *caddyauth.HTTPBasicAuth `json:"basic_auth,omitempty"`

	// AllowDestination, when set, restricts destinations to these names
	// ("example.com"), wildcards ("*.example.org": every name below it) and
	// ranges ("203.0.113.0/24"); default: any public address. Only a range
	// lets a private address through: an allowed name that resolves to a
	// private address is still refused.
	AllowDestination []string `json:"allow_destination,omitempty"`

	// DenyDestination refuses these names, wildcards and ranges; it wins
	// over AllowDestination.
	DenyDestination []string `json:"deny_destination,omitempty"`

	// BlockList is a file of names and wildcards to refuse (one a line, or
	// hosts-file lines "0.0.0.0 name..."; '#' comments). It is read at
	// provisioning (a bad file is a config error) and again whenever its
	// size or modification time changes; a bad new version is logged and
	// the previous list kept.
	BlockList string `json:"block_list,omitempty"`

	// BlockListInterval is how often the block list file is checked for
	// changes (default 5s).
	BlockListInterval caddy.Duration `json:"block_list_interval,omitempty"`

	// ConnectPorts are the ports CONNECT may reach (default 443).
	ConnectPorts []uint16 `json:"connect_ports,omitempty"`

	// HTTPPorts are the ports absolute-form requests may reach (default 80
	// and 443).
	HTTPPorts []uint16 `json:"http_ports,omitempty"`

	// PrivateDestinations is "deny" (default): loopback, private,
	// link-local, CGNAT, multicast, reserved and metadata addresses
	// (169.254.169.254, fd00:ec2::254) are refused unless in an
	// AllowDestination range; "allow" lets them through.
	PrivateDestinations string `json:"private_destinations,omitempty"`

	// HideClient (default true) forwards absolute-form requests without
	// Via, X-Forwarded-*, Forwarded or X-Real-IP headers (the client's own
	// are removed too). False adds the client's address to X-Forwarded-For
	// and a Via header. Proxy-* headers are always removed.
	HideClient *bool `json:"hide_client,omitempty"`

	// PAC is a request path (e.g. /proxy.pac) answered with a proxy
	// auto-config file pointing at this proxy, as the client reached it.
	PAC string `json:"pac,omitempty"`

	// DialTimeout bounds connecting to a destination (default 10s).
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// IdleTimeout closes a tunnel when no byte moved in either direction
	// for this long (default 5m).
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// Resolvers are the DNS servers (host:port, port 53 by default) used to
	// resolve destinations; default: the system's.
	Resolvers []string `json:"resolvers,omitempty"`

	// Limits are routes run for every admitted proxy request, after
	// authentication (so {http.auth.user.id} is set) and before the
	// destination is decided and dialled, with the tunnel or the forwarded
	// request inside them: a track handler there keys on the user and
	// counts the tunnel while it is open (req_cur), stick matchers with
	// tarpit refuse before any connection. A route that answers (tarpit,
	// respond) ends the request there.
	Limits caddyhttp.RouteList `json:"limits,omitempty"`

	// MaxHeaderSize bounds the header of a forwarded absolute-form request
	// (431 beyond it) and of the destination's response (502 beyond it).
	// Default 64 KiB.
	MaxHeaderSize int `json:"max_header_size,omitempty"`

	policy    *egress.Policy
	sources   []netip.Prefix
	resolver  egress.Resolver
	dialer    *net.Dialer
	transport *http.Transport
	logger    *zap.Logger
	stop      context.CancelFunc

	limitsSegment *caddyfile.Dispenser // Caddyfile only, until FinalizeUnmarshalCaddyfile
}

// CaddyModule returns the Caddy module information.
func (ForwardProxy) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.forward_proxy",
		New: func() caddy.Module { return new(ForwardProxy) },
	}
}

// Provision parses the policy, loads the block list and starts watching it,
// and sets up the resolver, dialer and transport.
func (fp *ForwardProxy) Provision(ctx caddy.Context) error {
	fp.logger = ctx.Logger()
	var err error
	if fp.sources, err = parseSources(fp.AllowSource); err != nil {
		return err
	}
	if fp.BasicAuth != nil {
		if fp.BasicAuth.Realm == "" {
			fp.BasicAuth.Realm = defaultRealm
		}
		if fp.BasicAuth.HashCache == nil {
			fp.BasicAuth.HashCache = new(caddyauth.Cache)
		}
		if err := fp.BasicAuth.Provision(ctx); err != nil {
			return fmt.Errorf("forward_proxy: basic_auth: %v", err)
		}
	}
	p := &egress.Policy{ConnectPorts: fp.ConnectPorts, HTTPPorts: fp.HTTPPorts}
	if len(p.ConnectPorts) == 0 {
		p.ConnectPorts = []uint16{443}
	}
	if len(p.HTTPPorts) == 0 {
		p.HTTPPorts = []uint16{80, 443}
	}
	if p.AllowNames, p.AllowPrefixes, err = parseDestinations("allow_destination", fp.AllowDestination); err != nil {
		return err
	}
	if p.DenyNames, p.DenyPrefixes, err = parseDestinations("deny_destination", fp.DenyDestination); err != nil {
		return err
	}
	if p.AllowPrivate, err = parsePrivate(fp.PrivateDestinations); err != nil {
		return err
	}
	fp.policy = p
	if err := fp.Limits.Provision(ctx); err != nil {
		return fmt.Errorf("forward_proxy: limits: %v", err)
	}
	if fp.DialTimeout == 0 {
		fp.DialTimeout = caddy.Duration(defaultDialTimeout)
	}
	if fp.IdleTimeout == 0 {
		fp.IdleTimeout = caddy.Duration(defaultIdleTimeout)
	}
	if fp.MaxHeaderSize == 0 {
		fp.MaxHeaderSize = defaultMaxHeaderSize
	}
	if fp.BlockListInterval == 0 {
		fp.BlockListInterval = caddy.Duration(defaultBlockListInterval)
	}
	if fp.resolver, err = newResolver(fp.Resolvers, time.Duration(fp.DialTimeout)); err != nil {
		return err
	}
	fp.dialer = &net.Dialer{Timeout: time.Duration(fp.DialTimeout)}
	fp.transport = fp.newTransport()
	if fp.BlockList != "" {
		w := &blockListWatcher{path: fp.BlockList, policy: p, logger: fp.logger}
		if err := w.load(); err != nil {
			return err
		}
		watchCtx, cancel := context.WithCancel(ctx)
		fp.stop = cancel
		go w.watch(watchCtx, time.Duration(fp.BlockListInterval))
	}
	return nil
}

// Validate checks the values that have no parser of their own.
func (fp *ForwardProxy) Validate() error {
	for _, ports := range []struct {
		name string
		list []uint16
	}{{"connect_ports", fp.ConnectPorts}, {"http_ports", fp.HTTPPorts}} {
		for _, p := range ports.list {
			if p == 0 {
				return fmt.Errorf("forward_proxy: %s: port 0 is not a port", ports.name)
			}
		}
	}
	switch {
	case fp.DialTimeout < 0:
		return fmt.Errorf("forward_proxy: dial_timeout %s must not be negative", time.Duration(fp.DialTimeout))
	case fp.IdleTimeout < 0:
		return fmt.Errorf("forward_proxy: idle_timeout %s must not be negative", time.Duration(fp.IdleTimeout))
	case fp.BlockListInterval < 0:
		return fmt.Errorf("forward_proxy: block_list_interval %s must not be negative", time.Duration(fp.BlockListInterval))
	case fp.MaxHeaderSize < 0:
		return fmt.Errorf("forward_proxy: max_header_size %d must not be negative", fp.MaxHeaderSize)
	case fp.PAC != "" && !strings.HasPrefix(fp.PAC, "/"):
		return fmt.Errorf("forward_proxy: pac %q must be a path starting with /", fp.PAC)
	}
	return nil
}

// Cleanup stops watching the block list and closes idle connections.
func (fp *ForwardProxy) Cleanup() error {
	if fp.stop != nil {
		fp.stop()
	}
	if fp.transport != nil {
		fp.transport.CloseIdleConnections()
	}
	return nil
}

// parseSources parses allow_source.
func parseSources(exprs []string) ([]netip.Prefix, error) {
	p, err := netaddr.ParsePrefixes(exprs)
	if err != nil {
		return nil, fmt.Errorf("forward_proxy: allow_source: %v", err)
	}
	return p, nil
}

// parseDestinations splits a destination list into names and ranges: an
// entry with a '/' or that is an IP address is a range, anything else a name
// or wildcard.
func parseDestinations(option string, entries []string) (egress.Names, []netip.Prefix, error) {
	var names egress.Names
	var ranges []string
	for _, e := range entries {
		if _, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil || strings.Contains(e, "/") {
			ranges = append(ranges, strings.Trim(e, "[]"))
			continue
		}
		if err := names.Add(e); err != nil {
			return names, nil, fmt.Errorf("forward_proxy: %s: %v", option, err)
		}
	}
	prefixes, err := netaddr.ParsePrefixes(ranges)
	if err != nil {
		return names, nil, fmt.Errorf("forward_proxy: %s: %v", option, err)
	}
	return names, prefixes, nil
}

// parsePrivate parses private_destinations.
func parsePrivate(v string) (allow bool, err error) {
	switch v {
	case "", "deny":
		return false, nil
	case "allow":
		return true, nil
	}
	return false, fmt.Errorf("forward_proxy: private_destinations %q is not deny or allow", v)
}

// newResolver returns the system resolver, or one that asks the given DNS
// servers (picked at random per query).
func newResolver(servers []string, timeout time.Duration) (egress.Resolver, error) {
	if len(servers) == 0 {
		return net.DefaultResolver, nil
	}
	addrs := make([]caddy.NetworkAddress, len(servers))
	for i, s := range servers {
		na, err := caddy.ParseNetworkAddressWithDefaults(s, "udp", 53)
		if err != nil {
			return nil, fmt.Errorf("forward_proxy: resolvers: %q: %v", s, err)
		}
		if na.PortRangeSize() != 1 || na.IsUnixNetwork() {
			return nil, fmt.Errorf("forward_proxy: resolvers: %q is not one host:port", s)
		}
		addrs[i] = na
	}
	d := &net.Dialer{Timeout: timeout}
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			na := addrs[rand.IntN(len(addrs))]
			return d.DialContext(ctx, na.Network, na.JoinHostPort(0))
		},
	}, nil
}

// hideClient reports whether client-identifying headers are removed.
func (fp *ForwardProxy) hideClient() bool {
	return fp.HideClient == nil || *fp.HideClient
}

// ServeHTTP proxies CONNECT and absolute-form requests, serves the PAC
// file, and passes every other request on.
func (fp *ForwardProxy) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	switch {
	case r.Method == http.MethodConnect && r.Header.Get(":protocol") == "":
		return fp.serveProxy(w, r, egress.Connect)
	case r.ProtoMajor == 1 && r.URL.IsAbs():
		return fp.serveProxy(w, r, egress.Absolute)
	case fp.PAC != "" && r.URL.Path == fp.PAC && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		return fp.servePAC(w, r)
	}
	return next.ServeHTTP(w, r)
}

var (
	_ caddyhttp.MiddlewareHandler = (*ForwardProxy)(nil)
	_ caddy.Provisioner           = (*ForwardProxy)(nil)
	_ caddy.Validator             = (*ForwardProxy)(nil)
	_ caddy.CleanerUpper          = (*ForwardProxy)(nil)
)
