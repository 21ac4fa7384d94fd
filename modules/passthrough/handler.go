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
	"context"
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

	"github.com/rampart-edge/caddy-rampart/modules/passthrough/engine"
	"github.com/rampart-edge/caddy-rampart/modules/proxyv2/wire"
)

func init() {
	caddy.RegisterModule(&Handler{})
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
	health   *engine.HealthCheck
	keys     []string // usage pool keys of the upstreams
	tlvs     []uint8
	crc      bool
	tlsApp   *caddytls.TLS
	sites    []string // host names of the HTTP server's sites
	logger   *zap.Logger
	cancel   context.CancelFunc

	mConns, mUp, mDown prometheus.Counter
	mActive            prometheus.Gauge
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
	// Port, when set, is checked instead of the upstream's port.
	Port int `json:"port,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.handlers.passthrough",
		New: func() caddy.Module { return new(Handler) },
	}
}

// upstreams holds the state of every upstream address across config
// reloads: health and active connection counts survive a reload, so
// least_conn and the health checks continue where the old config left off.
var upstreams = caddy.NewUsagePool()

// Provision sets up the upstreams, the health checker and the metrics.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.Route == "" {
		h.Route = "passthrough"
	}
	if h.IdleTimeout == 0 {
		h.IdleTimeout = caddy.Duration(time.Hour)
	}
	if h.DialTimeout == 0 {
		h.DialTimeout = caddy.Duration(5 * time.Second)
	}
	policy, err := engine.ParsePolicy(h.LBPolicy)
	if err != nil {
		return fmt.Errorf("passthrough route %q: %v", h.Route, err)
	}
	if err := h.provisionTLVs(); err != nil {
		return err
	}
	if err := registerMetrics(ctx); err != nil {
		return err
	}
	h.balancer = &engine.Balancer{Policy: policy}
	for _, addr := range h.Upstreams {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("passthrough route %q: upstream %q: %v", h.Route, addr, err)
		}
		val, _ := upstreams.LoadOrStore(addr, &engine.Upstream{Addr: addr})
		h.keys = append(h.keys, addr)
		u := val.(*engine.Upstream)
		h.balancer.Upstreams = append(h.balancer.Upstreams, u)
		metrics.healthy.WithLabelValues(h.Route, addr).Set(boolFloat(u.Healthy()))
	}
	h.mConns = metrics.connections.WithLabelValues(h.Route)
	h.mActive = metrics.active.WithLabelValues(h.Route)
	h.mUp = metrics.bytes.WithLabelValues(h.Route, "up")
	h.mDown = metrics.bytes.WithLabelValues(h.Route, "down")
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
		route := h.Route
		logger := h.logger
		h.health = &engine.HealthCheck{
			Interval: time.Duration(hc.Interval), Timeout: timeout, Passes: hc.Passes, Fails: hc.Fails, Port: hc.Port,
			OnChange: func(u *engine.Upstream, ok bool) {
				metrics.healthy.WithLabelValues(route, u.Addr).Set(boolFloat(ok))
				logger.Info("upstream health changed", zap.String("route", route), zap.String("upstream", u.Addr), zap.Bool("healthy", ok))
			},
		}
		var runCtx context.Context
		runCtx, h.cancel = context.WithCancel(context.Background())
		go h.health.Run(runCtx, h.balancer.Upstreams)
	}
	return nil
}

// provisionTLVs resolves the TLV names of the PROXY v2 header.
func (h *Handler) provisionTLVs() error {
	switch h.ProxyProtocol {
	case "":
		return nil
	case "v2":
	default:
		return fmt.Errorf("passthrough route %q: proxy_protocol %q: only v2 is supported", h.Route, h.ProxyProtocol)
	}
	names := h.ProxyTLVs
	if len(names) == 0 {
		names = []string{"authority", "alpn"}
	}
	for _, n := range names {
		switch n {
		case "authority":
			h.tlvs = append(h.tlvs, wire.TLVAuthority)
		case "alpn":
			h.tlvs = append(h.tlvs, wire.TLVALPN)
		case "crc32c":
			h.crc = true
		case "none":
		default:
			return fmt.Errorf("passthrough route %q: unknown PROXY TLV %q (want authority, alpn, crc32c or none)", h.Route, n)
		}
	}
	return nil
}

// Validate checks that the handler can relay anything.
func (h *Handler) Validate() error {
	if len(h.Upstreams) == 0 {
		return fmt.Errorf("passthrough route %q: no upstreams", h.Route)
	}
	return nil
}

// Cleanup stops the health checks and releases the upstream state. It never
// touches connections being relayed: they outlive a config reload.
func (h *Handler) Cleanup() error {
	if h.cancel != nil {
		h.cancel()
	}
	for _, k := range h.keys {
		_, _ = upstreams.Delete(k)
	}
	return nil
}

// Handle relays the connection, or passes it to next when SkipManaged
// applies.
func (h *Handler) Handle(cx *layer4.Connection, next layer4.Handler) error {
	hello, _ := engine.ParseClientHello(cx.MatchingBytes())
	if hello.ServerName == "" {
		if repl, ok := cx.Context.Value(layer4.ReplacerCtxKey).(*caddy.Replacer); ok {
			hello.ServerName, _ = repl.GetString("l4.tls.server_name")
		}
	}
	if h.SkipManaged && h.managed(hello) {
		return next.Handle(cx)
	}

	clientIP := hostOf(cx.RemoteAddr())
	var tried []*engine.Upstream
	var backend net.Conn
	var up *engine.Upstream
	for backend == nil {
		up = h.balancer.Pick(clientIP, tried)
		if up == nil {
			metrics.errors.WithLabelValues(h.Route, "no_upstream").Inc()
			h.logger.Error("no upstream available", zap.String("route", h.Route),
				zap.String("remote", cx.RemoteAddr().String()), zap.String("server_name", hello.ServerName))
			return nil
		}
		tried = append(tried, up)
		d := net.Dialer{Timeout: time.Duration(h.DialTimeout)}
		c, err := d.DialContext(cx.Context, "tcp", up.Addr)
		if err != nil {
			metrics.errors.WithLabelValues(h.Route, "dial").Inc()
			h.logger.Error("dialing upstream", zap.String("route", h.Route), zap.String("upstream", up.Addr),
				zap.String("remote", cx.RemoteAddr().String()), zap.Error(err))
			continue
		}
		backend = c
	}
	defer backend.Close()
	release := up.Acquire()
	defer release()

	// the preamble: PROXY header, then what the matchers already read
	var preamble []byte
	if h.ProxyProtocol != "" {
		var err error
		if preamble, err = h.proxyHeader(cx, hello); err != nil {
			metrics.errors.WithLabelValues(h.Route, "proxy_header").Inc()
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
		metrics.errors.WithLabelValues(h.Route, "dial").Inc()
		return nil
	}

	h.mConns.Inc()
	h.mActive.Inc()
	defer h.mActive.Dec()
	clientR, clientW := splitConn(cx)
	res := engine.Relay(clientR, clientW, backend, engine.RelayOptions{
		IdleTimeout: time.Duration(h.IdleTimeout),
		OnBytes: func(upDir bool, n int64) {
			if upDir {
				h.mUp.Add(float64(n))
			} else {
				h.mDown.Add(float64(n))
			}
		},
	})
	if c := h.logger.Check(zap.DebugLevel, "passthrough connection ended"); c != nil {
		c.Write(zap.String("route", h.Route), zap.String("upstream", up.Addr),
			zap.String("remote", cx.RemoteAddr().String()), zap.String("server_name", hello.ServerName),
			zap.Int64("bytes_up", res.Up), zap.Int64("bytes_down", res.Down), zap.Bool("idle_timeout", res.Idle))
	}
	return nil
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
	src, err := addrPort(cx.RemoteAddr())
	if err != nil {
		return nil, err
	}
	dst, err := addrPort(cx.LocalAddr())
	if err != nil {
		return nil, err
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

// addrPort converts a connection address, IPv4-mapped IPv6 addresses (a
// dual-stack socket's view of IPv4 clients) to IPv4.
func addrPort(a net.Addr) (netip.AddrPort, error) {
	var ap netip.AddrPort
	if ta, ok := a.(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	} else {
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return netip.AddrPort{}, fmt.Errorf("address %q is not an IP address and port", a)
		}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func hostOf(a net.Addr) string {
	s := a.String()
	if host, _, err := net.SplitHostPort(s); err == nil {
		return host
	}
	return s
}

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
	_ caddy.Validator    = (*Handler)(nil)
	_ caddy.CleanerUpper = (*Handler)(nil)
	_ layer4.NextHandler = (*Handler)(nil)
)
