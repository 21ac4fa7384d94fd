package hideorigin

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/internal/metrics"
	"github.com/rampart-edge/caddy-rampart/internal/netaddr"
	"github.com/rampart-edge/caddy-rampart/modules/hideorigin/sign"
)

// OriginLock is the origin-side handler: it lets a request through only with
// a valid, fresh and not replayed signature from an edge's hide_origin
// (`sign`), optionally only from allowed source addresses, and hands on the
// client IP the edge signed.
//
// After a successful check, {client_ip}, the client_ip matcher and access
// logs see the signed client IP, X-Forwarded-For is set to it (so a
// reverse_proxy behind the lock passes "client, edge"), the signature header
// is removed, and {http.origin_lock.client_ip} and {http.origin_lock.key_id}
// are set.
type OriginLock struct {
	// Keys are the accepted signing keys: the current one and any previous
	// ones during a rotation (each edge's key is recognised by its key id).
	// Global placeholders such as {env.RAMPART_EDGE_KEY} are replaced at
	// load time.
	Keys []string `json:"keys,omitempty"`

	// MaxSkew is how far a signature's timestamp may be from this server's
	// clock. Default 30s.
	MaxSkew caddy.Duration `json:"max_skew,omitempty"`

	// Allow lists the CIDRs (or single addresses) the edges connect from.
	// When set, a connection from anywhere else is refused even with a valid
	// signature.
	Allow []string `json:"allow,omitempty"`

	// Deny is what a refused request gets: "403" (default: an HTTP 403
	// error that the site's handle_errors routes can answer; without them
	// Caddy answers an empty 403) or "close" (the connection is closed, or
	// the HTTP/2 stream reset, without a response).
	Deny string `json:"deny,omitempty"`

	// ReplayCache bounds how many nonces each of the replay cache's two
	// generations holds (default 262144; about 50 bytes each). When it is
	// full, new requests are refused rather than fresh nonces forgotten.
	ReplayCache int `json:"replay_cache,omitempty"`

	// ReplayCluster shares the replay cache with the other origin
	// instances through the stick_cluster app's Redis (a nonce is recorded
	// with an atomic SET NX that expires after the 2 × max_skew validity
	// window), so a request replayed to another instance is refused. While
	// Redis cannot be reached, "local" admits with this instance's own cache
	// (logged once a second, metered), "deny" refuses signed requests.
	// Empty (default): the replay cache is this instance's only.
	ReplayCluster string `json:"replay_cluster,omitempty"`

	verifier *sign.Verifier
	allow    []netip.Prefix
	close    bool
	keys     []sign.Key    // parsed Keys
	skew     time.Duration // MaxSkew or its default
	capacity int           // ReplayCache or its default
	poolKey  string
	shared   *sharedReplays
	logger   *zap.Logger
}

// defaultReplayCache is the default per-generation capacity.
const defaultReplayCache = 1 << 18

// replayPool keeps replay caches across config reloads, so a reload does not
// reopen a replay window.
var replayPool = caddy.NewUsagePool()

type replayHolder struct{ *sign.ReplayCache }

func (replayHolder) Destruct() error { return nil }

// CaddyModule returns the Caddy module information.
func (OriginLock) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.origin_lock",
		New: func() caddy.Module { return new(OriginLock) },
	}
}

// Provision parses keys and CIDRs and gets the replay cache.
func (l *OriginLock) Provision(ctx caddy.Context) error {
	l.logger = ctx.Logger()
	if err := metrics.Register(ctx, metricRewrites, metricActions, metricLock, metricReplayOutage, metricReplayUnshared); err != nil {
		return fmt.Errorf("origin_lock: metrics: %v", err)
	}
	if len(l.Keys) == 0 {
		return errors.New("origin_lock: at least one key is required")
	}
	if err := l.provisionOptions(false); err != nil {
		return err
	}
	keys, skew, capacity := l.keys, l.skew, l.capacity
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	if l.ReplayCluster != "" { // local or deny, checked by provisionOptions
		shared, err := newSharedReplays(ctx, l.ReplayCluster, 2*skew, l.logger)
		if err != nil {
			return err
		}
		l.shared = shared
	}
	sort.Strings(ids)
	l.poolKey = fmt.Sprintf("origin_lock/%s/%s/%d", strings.Join(ids, ","), skew, capacity)
	val, _, err := replayPool.LoadOrNew(l.poolKey, func() (caddy.Destructor, error) {
		return replayHolder{sign.NewReplayCache(2*skew, capacity)}, nil
	})
	if err != nil {
		return err
	}
	v, err := sign.NewVerifier(keys, skew, val.(replayHolder).ReplayCache)
	if err != nil {
		return fmt.Errorf("origin_lock: %v", err)
	}
	l.verifier = v
	return nil
}

// provisionOptions checks and compiles the options that need no running
// config. checkOptions calls it after every Caddyfile option with adapting
// set, so a bad value is reported at the user's line; keys with
// placeholders are then left for the load, where they are known.
func (l *OriginLock) provisionOptions(adapting bool) error {
	repl := caddy.NewReplacer()
	l.keys = nil
	for _, raw := range l.Keys {
		if adapting && strings.Contains(raw, "{") {
			continue
		}
		secret := repl.ReplaceKnown(raw, "")
		if secret == "" || strings.Contains(secret, "{") {
			return fmt.Errorf("origin_lock: key %s is empty or has an unknown placeholder", redact(raw))
		}
		k, err := sign.NewKey(secret)
		if err != nil {
			return fmt.Errorf("origin_lock: key %s: %v", redact(raw), err)
		}
		l.keys = append(l.keys, k)
	}
	l.skew = time.Duration(l.MaxSkew)
	if l.skew == 0 {
		l.skew = 30 * time.Second
	}
	if l.skew < 0 {
		return fmt.Errorf("origin_lock: max_skew %s is negative", l.skew)
	}
	l.capacity = l.ReplayCache
	if l.capacity == 0 {
		l.capacity = defaultReplayCache
	}
	if l.capacity < 0 {
		return fmt.Errorf("origin_lock: replay_cache %d is negative", l.capacity)
	}
	allow, err := netaddr.ParsePrefixes(l.Allow)
	if err != nil {
		return fmt.Errorf("origin_lock: allow: %v", err)
	}
	l.allow = allow
	switch l.Deny {
	case "", "403":
	case "close":
		l.close = true
	default:
		return fmt.Errorf("origin_lock: deny %q is not 403 or close", l.Deny)
	}
	switch l.ReplayCluster {
	case "", ReplayClusterLocal, ReplayClusterDeny:
	default:
		return fmt.Errorf("origin_lock: replay_cluster %q is not local or deny", l.ReplayCluster)
	}
	return nil
}

// Cleanup releases the replay cache.
func (l *OriginLock) Cleanup() error {
	if l.poolKey != "" {
		_, _ = replayPool.Delete(l.poolKey)
	}
	return nil
}

// lockResult maps a verification error to the metric's result label.
func lockResult(err error) string {
	for _, c := range []struct {
		err   error
		label string
	}{
		{sign.ErrMissing, "missing"}, {sign.ErrMalformed, "malformed"}, {sign.ErrUnknownKey, "unknown_key"},
		{sign.ErrBadSignature, "bad_signature"}, {sign.ErrStale, "stale"}, {sign.ErrReplay, "replay"},
		{sign.ErrCacheFull, "cache_full"},
	} {
		if errors.Is(err, c.err) {
			return c.label
		}
	}
	return "malformed"
}

// ServeHTTP checks the signature.
func (l *OriginLock) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	peer, _ := netaddr.HostIP(r.RemoteAddr)
	if len(l.allow) > 0 && !netaddr.Contains(l.allow, peer) {
		return l.deny(r, "not_allowed", fmt.Errorf("source %s is not in allow", peer))
	}
	sig, err := l.verifier.Verify(r.Header.Get(sign.Header), r.Method, r.Host, r.RequestURI)
	if err != nil {
		return l.deny(r, lockResult(err), err)
	}
	if l.shared != nil {
		switch err := l.shared.check(r.Context(), sig.Nonce[:]); {
		case errors.Is(err, errReplayShared):
			return l.deny(r, "replay", err)
		case err != nil:
			return l.deny(r, "cluster_unavailable", err)
		}
	}
	lockOK.Inc()
	delete(r.Header, sign.Header)
	ip := sig.ClientIP.String()
	caddyhttp.SetVar(r.Context(), caddyhttp.ClientIPVarKey, ip)
	caddyhttp.SetVar(r.Context(), caddyhttp.TrustedProxyVarKey, true)
	r.Header["X-Forwarded-For"] = []string{ip}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set("http.origin_lock.client_ip", ip)
	repl.Set("http.origin_lock.key_id", sig.KeyID)
	return next.ServeHTTP(w, r)
}

// deny refuses one request: with a 403 HandlerError (so that the site's
// handle_errors can shape the page), or by closing the connection. It
// never affects other requests or the listener.
func (l *OriginLock) deny(r *http.Request, result string, err error) error {
	metricLock.WithLabelValues(result).Inc()
	l.logger.Info("origin_lock refused a request",
		zap.String("remote_addr", r.RemoteAddr), zap.String("method", r.Method),
		zap.String("host", r.Host), zap.String("result", result), zap.Error(err))
	if l.close {
		// net/http closes the connection (or resets the HTTP/2 stream)
		// without writing a response
		panic(http.ErrAbortHandler)
	}
	return caddyhttp.Error(http.StatusForbidden, fmt.Errorf("origin_lock: %s: %w", result, err))
}

// Interface guards
var (
	_ caddy.Provisioner           = (*OriginLock)(nil)
	_ caddy.CleanerUpper          = (*OriginLock)(nil)
	_ caddyhttp.MiddlewareHandler = (*OriginLock)(nil)
)
