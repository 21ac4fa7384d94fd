// Package passthrough routes TLS connections by SNI to backends untouched,
// beside the sites Caddy terminates, on one listener. The layer4 handler
// "passthrough" relays a connection to one of its upstreams (load balancing,
// health checks, PROXY v2 with the SNI and ALPN, idle timeout, half-close,
// splice); the listener wrapper "passthrough" runs layer4 routes before
// Caddy's TLS and hands the connections no route took to the next wrapper;
// the app "passthrough" (what the Caddyfile global option generates) puts
// that chain in front of every HTTP server on the HTTPS port.
package passthrough

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/caddyserver/certmagic"
	"github.com/mholt/caddy-l4/layer4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	rmetrics "github.com/rampart-edge/caddy-rampart/internal/metrics"
	"github.com/rampart-edge/caddy-rampart/internal/netaddr"
	"github.com/rampart-edge/caddy-rampart/modules/passthrough/engine"
	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
	"github.com/rampart-edge/caddy-rampart/modules/stats/upstate"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler relays a TLS connection, still encrypted, to one of its upstreams.
// It is a terminal layer4 handler: the ClientHello the matchers read is sent
// to the upstream first (after a PROXY v2 header when configured), then bytes
// flow both ways until both sides have finished.
type Handler struct {
	// Route names the route in metrics and logs ("route" label). The
	// Caddyfile uses the name pattern; it must come from the configuration,
	// never from client input, so that metric labels stay bounded.
	Route string `json:"route,omitempty"`

	// Upstreams are the backends' dial addresses (host:port).
	Upstreams []string `json:"upstreams,omitempty"`

	// LBPolicy selects an upstream: round_robin (default), least_conn,
	// random, first or ip_hash.
	LBPolicy string `json:"lb_policy,omitempty"`

	// HealthChecks, when set, probes the upstreams with TCP connections and
	// takes those that fail out of selection until they pass again.
	HealthChecks *HealthChecks `json:"health_checks,omitempty"`

	// ProxyProtocol is "v2" to send a PROXY protocol v2 header to the
	// upstream before the ClientHello; empty sends none.
	ProxyProtocol string `json:"proxy_protocol,omitempty"`

	// ProxyTLVs lists the TLVs of the PROXY v2 header: "authority" (the
	// SNI), "alpn" (the first protocol the client offers), "crc32c". Empty
	// means authority and alpn. Use "none" for a header without TLVs.
	ProxyTLVs []string `json:"proxy_protocol_tlvs,omitempty"`

	// IdleTimeout closes a relayed connection after this long without a
	// byte in either direction. Default: 1h.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// DialTimeout bounds each connection attempt to an upstream. Default: 5s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// SkipManaged passes a connection on to the next handler (in the
	// passthrough listener wrapper: Caddy's TLS) when its server name is a
	// site of the HTTP server (when the passthrough app placed the
	// handler), when Caddy has a certificate for it, or when it is an ACME
	// TLS-ALPN-01 challenge. The Caddyfile sets it on the `default` route so
	// that an unknown-name backend never captures Caddy's own sites.
	SkipManaged bool `json:"skip_managed,omitempty"`

	balancer *engine.Balancer
	counted  []string // the connCounts keys this handler holds
	leave    []func() // leave the stats page's upstream registry
	tlvs     []uint8
	crc      bool
	tlsApp   *caddytls.TLS
	sites    []string // host names of the HTTP server's sites
	logger   *zap.Logger

	// the route's series, resolved once
	mConns, mUp, mDown                    prometheus.Counter
	mNoUpstream, mDialError, mHeaderError prometheus.Counter
	mActive                               prometheus.Gauge
}

// HealthChecks configures active TCP health checks.
type HealthChecks struct {
	// Interval between checks. Required to enable checks.
	Interval caddy.Duration `json:"interval,omitempty"`
	// Timeout of one check. Default: 2s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// Passes is how many consecutive successful checks bring an upstream
	// back. Default: 1.
	Passes int `json:"passes,omitempty"`
	// Fails is how many consecutive failed checks take it out. Default: 1.
	Fails int `json:"fails,omitempty"`
	// Port, when set (1-65535), is checked instead of the upstream's port.
	Port int `json:"port,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.handlers.passthrough",
		New: func() caddy.Module { return new(Handler) },
	}
}

// connCounts holds the count of connections being relayed to each backend
// address, for least_conn: it is the backend's load, shared by the routes
// that use the address and carried across config reloads (as Caddy's
// reverse_proxy keeps its hosts' request counts).
var connCounts = caddy.NewUsagePool()

// Provision checks the configuration, sets up the route's upstreams and
// metrics, and starts the health checker. Health belongs to the route, as
// Caddy keeps active health per reverse_proxy handler: two routes that share
// a backend address judge it each by its own checks, and the checker runs
// until the configuration that loaded the handler is unloaded (ctx ends).
// Connection counts are the backend's (connCounts).
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.Route == "" {
		h.Route = "passthrough"
	}
	if err := h.check(); err != nil {
		return fmt.Errorf("passthrough route %q: %v", h.Route, err)
	}
	if h.IdleTimeout == 0 {
		h.IdleTimeout = caddy.Duration(time.Hour)
	}
	if h.DialTimeout == 0 {
		h.DialTimeout = caddy.Duration(5 * time.Second)
	}
	policy, _ := engine.ParsePolicy(h.LBPolicy) // checked
	h.tlvs, h.crc, _ = parseTLVs(h.ProxyTLVs)   // checked
	if err := rmetrics.Register(ctx, metrics.connections, metrics.active, metrics.bytes, metrics.errors, metrics.healthy); err != nil {
		return err
	}
	h.balancer = &engine.Balancer{Policy: policy}
	for _, addr := range h.Upstreams {
		conns, _ := connCounts.LoadOrStore(addr, new(engine.Counter))
		h.counted = append(h.counted, addr)
		cell := upstate.For(addr)
		u := &engine.Upstream{Addr: addr, Conns: conns.(*engine.Counter), Held: cell.Held}
		h.balancer.Upstreams = append(h.balancer.Upstreams, u)
		member := &upstate.Member{
			Kind: "passthrough", Group: h.Route, Addr: addr, Active: u.Active,
			Healthy: func() bool { return u.Healthy() && cell.State() != upstate.Maint },
		}
		if h.HealthChecks != nil && h.HealthChecks.Interval > 0 {
			member.Checks = func() upstate.Checks { return upstate.Checks(u.Checks()) }
		}
		h.leave = append(h.leave, upstate.Join(member))
		metrics.healthy.WithLabelValues(h.Route, addr).Set(1)
	}
	h.mConns = metrics.connections.WithLabelValues(h.Route)
	h.mActive = metrics.active.WithLabelValues(h.Route)
	h.mUp = metrics.bytes.WithLabelValues(h.Route, "up")
	h.mDown = metrics.bytes.WithLabelValues(h.Route, "down")
	h.mNoUpstream = metrics.errors.WithLabelValues(h.Route, "no_upstream")
	h.mDialError = metrics.errors.WithLabelValues(h.Route, "dial")
	h.mHeaderError = metrics.errors.WithLabelValues(h.Route, "proxy_header")
	if h.SkipManaged {
		app, err := ctx.App("tls")
		if err != nil {
			return fmt.Errorf("passthrough route %q: getting the tls app: %v", h.Route, err)
		}
		h.tlsApp = app.(*caddytls.TLS)
		h.sites, _ = ctx.Value(siteNamesCtxKey).([]string)
	}
	if hc := h.HealthChecks; hc != nil && hc.Interval > 0 {
		timeout := time.Duration(hc.Timeout)
		if timeout <= 0 {
			timeout = 2 * time.Second
		}
		route, logger := h.Route, h.logger
		checker := &engine.HealthCheck{
			Interval: time.Duration(hc.Interval), Timeout: timeout, Passes: hc.Passes, Fails: hc.Fails, Port: hc.Port,
			OnChange: func(u *engine.Upstream, ok bool) {
				metrics.healthy.WithLabelValues(route, u.Addr).Set(boolFloat(ok))
				logger.Info("upstream health changed", zap.String("route", route), zap.String("upstream", u.Addr), zap.Bool("healthy", ok))
			},
		}
		go checker.Run(ctx, h.balancer.Upstreams)
	}
	return nil
}

// Cleanup releases the route's hold on the connection counts and leaves the
// stats page's upstream registry. Connections being relayed keep theirs
// and are not touched: they outlive a reload.
func (h *Handler) Cleanup() error {
	for _, leave := range h.leave {
		leave()
	}
	for _, addr := range h.counted {
		_, _ = connCounts.Delete(addr)
	}
	return nil
}

// check is every rule of the handler's configuration, for JSON and
// Caddyfile configs alike (the Caddyfile parser calls the same checks
// per line so that its errors name the user's line).
func (h *Handler) check() error {
	if len(h.Upstreams) == 0 {
		return errors.New("no upstreams")
	}
	for _, u := range h.Upstreams {
		if err := checkUpstream(u); err != nil {
			return err
		}
	}
	if _, err := engine.ParsePolicy(h.LBPolicy); err != nil {
		return err
	}
	if err := checkProxyProtocol(h.ProxyProtocol); err != nil {
		return err
	}
	if _, _, err := parseTLVs(h.ProxyTLVs); err != nil {
		return err
	}
	if err := checkDuration("idle_timeout", h.IdleTimeout); err != nil {
		return err
	}
	if err := checkDuration("dial_timeout", h.DialTimeout); err != nil {
		return err
	}
	return h.HealthChecks.check()
}

// check is the rule set of the health check options.
func (hc *HealthChecks) check() error {
	if hc == nil {
		return nil
	}
	if err := checkDuration("health_interval", hc.Interval); err != nil {
		return err
	}
	if err := checkDuration("health_timeout", hc.Timeout); err != nil {
		return err
	}
	if hc.Passes < 0 {
		return fmt.Errorf("health_passes %d: want a number of checks >= 0", hc.Passes)
	}
	if hc.Fails < 0 {
		return fmt.Errorf("health_fails %d: want a number of checks >= 0", hc.Fails)
	}
	if hc.Port < 0 || hc.Port > 65535 {
		return fmt.Errorf("health_port %d out of range (want 1-65535, or 0 for the upstream's own port)", hc.Port)
	}
	return nil
}

// checkUpstream accepts host:port with a numeric port; placeholders are
// left for Caddy to resolve.
func checkUpstream(u string) error {
	if strings.Contains(u, "{") {
		return nil
	}
	na, err := caddy.ParseNetworkAddress(u)
	if err == nil && (na.Network != "tcp" || na.Host == "" || na.StartPort == 0 || na.PortRangeSize() != 1) {
		err = errors.New("want host:port")
	}
	if err != nil {
		return fmt.Errorf("upstream %q: %v", u, err)
	}
	return nil
}

// checkDuration refuses a negative duration.
func checkDuration(option string, d caddy.Duration) error {
	if d < 0 {
		return fmt.Errorf("%s %v: must not be negative", option, time.Duration(d))
	}
	return nil
}

// checkProxyProtocol accepts the PROXY protocol versions the handler sends.
func checkProxyProtocol(v string) error {
	if v != "" && v != "v2" {
		return fmt.Errorf("proxy_protocol %q: only v2 is supported (with TLVs authority, alpn, crc32c or none)", v)
	}
	return nil
}

// parseTLVs resolves the TLV names of the PROXY v2 header; no names means
// authority and alpn.
func parseTLVs(names []string) (tlvs []uint8, crc bool, err error) {
	if len(names) == 0 {
		names = []string{"authority", "alpn"}
	}
	for _, n := range names {
		switch n {
		case "authority":
			tlvs = append(tlvs, wire.TLVAuthority)
		case "alpn":
			tlvs = append(tlvs, wire.TLVALPN)
		case "crc32c":
			crc = true
		case "none":
		default:
			return nil, false, fmt.Errorf("unknown TLV %q (want authority, alpn, crc32c or none)", n)
		}
	}
	return tlvs, crc, nil
}

// Handle relays the connection, or passes it to next when SkipManaged
// applies.
func (h *Handler) Handle(cx *layer4.Connection, next layer4.Handler) error {
	var hello engine.Hello
	if h.SkipManaged || h.ProxyProtocol != "" {
		hello = h.clientHello(cx)
	}
	if h.SkipManaged && h.managed(hello) {
		return next.Handle(cx)
	}

	up, backend, release := h.connect(cx)
	if backend == nil {
		return nil
	}
	defer release()
	defer backend.Close()
	h.mActive.Inc()
	defer h.mActive.Dec()

	// the preamble: PROXY header, then what the matchers already read
	var preamble []byte
	if h.ProxyProtocol != "" {
		var err error
		if preamble, err = h.proxyHeader(cx, hello); err != nil {
			h.mHeaderError.Inc()
			h.logger.Error("writing PROXY header", zap.String("route", h.Route),
				zap.String("remote", cx.RemoteAddr().String()), zap.Error(err))
			return nil
		}
	}
	if n := len(cx.MatchingBytes()); n > 0 {
		start := len(preamble)
		preamble = slices.Grow(preamble, n)[:start+n]
		if _, err := io.ReadFull(cx, preamble[start:]); err != nil {
			return nil
		}
	}
	if _, err := backend.Write(preamble); err != nil {
		h.mDialError.Inc()
		return nil
	}

	h.mConns.Inc()
	clientR, clientW := splitConn(cx)
	res := engine.Relay(clientR, clientW, backend, engine.RelayOptions{
		IdleTimeout: time.Duration(h.IdleTimeout),
		OnBytes:     h.countBytes,
	})
	if c := h.logger.Check(zap.DebugLevel, "passthrough connection ended"); c != nil {
		c.Write(zap.String("route", h.Route), zap.String("upstream", up.Addr),
			zap.String("remote", cx.RemoteAddr().String()), zap.String("server_name", h.clientHello(cx).ServerName),
			zap.Int64("bytes_up", res.Up), zap.Int64("bytes_down", res.Down), zap.Bool("idle_timeout", res.Idle))
	}
	return nil
}

// countBytes adds relayed bytes to the route's counters.
func (h *Handler) countBytes(upDir bool, n int64) {
	if upDir {
		h.mUp.Add(float64(n))
	} else {
		h.mDown.Add(float64(n))
	}
}

// clientHello reads the server name and ALPN of the ClientHello the
// matchers read.
func (h *Handler) clientHello(cx *layer4.Connection) engine.Hello {
	hello, _ := engine.ParseClientHello(cx.MatchingBytes())
	if hello.ServerName == "" {
		if repl, ok := cx.Context.Value(layer4.ReplacerCtxKey).(*caddy.Replacer); ok {
			hello.ServerName, _ = repl.GetString("l4.tls.server_name")
		}
	}
	return hello
}

// connect dials an upstream the balancer picks, trying the others when a
// dial fails; it returns a nil connection when none answers. The upstream
// counts the connection (least_conn) from the pick on, dial included; the
// caller calls release when the connection ends.
func (h *Handler) connect(cx *layer4.Connection) (up *engine.Upstream, backend net.Conn, release func()) {
	var client netip.Addr
	if h.balancer.Policy == engine.IPHash {
		client, _ = netaddr.IP(cx.RemoteAddr())
	}
	var tried []*engine.Upstream
	for {
		up = h.balancer.Pick(client, tried)
		if up == nil {
			h.mNoUpstream.Inc()
			h.logger.Error("no upstream available", zap.String("route", h.Route),
				zap.String("remote", cx.RemoteAddr().String()))
			return nil, nil, nil
		}
		tried = append(tried, up)
		release := up.Acquire()
		// no TCP keepalive on the backend side (four setsockopt calls per
		// connection): the idle timeout ends dead connections
		d := net.Dialer{Timeout: time.Duration(h.DialTimeout), KeepAlive: -1}
		c, err := d.DialContext(cx.Context, "tcp", up.Addr)
		if err == nil {
			return up, c, release
		}
		release()
		h.mDialError.Inc()
		h.logger.Error("dialing upstream", zap.String("route", h.Route), zap.String("upstream", up.Addr),
			zap.String("remote", cx.RemoteAddr().String()), zap.Error(err))
	}
}

// managed reports whether Caddy itself should answer this ClientHello: an
// ACME TLS-ALPN-01 challenge, a name of one of the server's sites (even
// before its certificate is issued), or a name Caddy has a certificate for.
func (h *Handler) managed(hello engine.Hello) bool {
	if slices.Contains(hello.ALPN, "acme-tls/1") {
		return true
	}
	if hello.ServerName == "" {
		return false
	}
	for _, site := range h.sites {
		if certmagic.MatchWildcard(hello.ServerName, strings.ToLower(site)) {
			return true
		}
	}
	return h.tlsApp != nil && h.tlsApp.HasCertificateForSubject(hello.ServerName)
}

// proxyHeader builds the PROXY v2 header for the connection.
func (h *Handler) proxyHeader(cx *layer4.Connection, hello engine.Hello) ([]byte, error) {
	src, ok := netaddr.AddrPort(cx.RemoteAddr())
	if !ok {
		return nil, fmt.Errorf("client address %q is not an IP address and port", cx.RemoteAddr())
	}
	dst, ok := netaddr.AddrPort(cx.LocalAddr())
	if !ok {
		return nil, fmt.Errorf("local address %q is not an IP address and port", cx.LocalAddr())
	}
	hdr := wire.Header{Version: 2, Command: wire.CommandProxy, Transport: wire.TransportStream, Source: src, Destination: dst}
	for _, t := range h.tlvs {
		switch {
		case t == wire.TLVAuthority && hello.ServerName != "":
			hdr.TLVs = append(hdr.TLVs, wire.TLV{Type: t, Value: []byte(hello.ServerName)})
		case t == wire.TLVALPN && len(hello.ALPN) > 0:
			hdr.TLVs = append(hdr.TLVs, wire.TLV{Type: t, Value: []byte(hello.ALPN[0])})
		}
	}
	return hdr.AppendV2(nil, h.crc)
}

// boolFloat is 1 for true, 0 for false (a gauge of a state).
func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// netConner is a wrapping connection that exposes what it wraps.
type netConner interface{ NetConn() net.Conn }

// buffered is a wrapping connection that may hold bytes read ahead.
type buffered interface{ Buffered() int }

// splitConn returns the connection to read the client through and the one
// to write to it. Writes pass through wrappers unchanged, so they go to the
// socket underneath all of them. Reads go through a wrapper unless it says
// it holds no read-ahead bytes (Buffered() == 0): then the socket beneath is
// read directly. With both a *net.TCPConn, the relay splices.
func splitConn(cx *layer4.Connection) (r, w net.Conn) {
	r = cx.Conn // the matchers' buffer was drained into the preamble
	for {
		nc, ok := r.(netConner)
		b, ok2 := r.(buffered)
		if !ok || !ok2 || b.Buffered() != 0 {
			break
		}
		r = nc.NetConn()
	}
	w = r
	for {
		nc, ok := w.(netConner)
		if !ok {
			break
		}
		w = nc.NetConn()
	}
	return r, w
}

var errHandedOff = errors.New("connection handed to the next listener")

// Interface guards
var (
	_ caddy.Provisioner  = (*Handler)(nil)
	_ caddy.CleanerUpper = (*Handler)(nil)
	_ layer4.NextHandler = (*Handler)(nil)
)
