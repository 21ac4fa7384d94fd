// Package hideorigin keeps an origin's identity from clients: the hide_origin
// handler (edge side: header, redirect, cookie, body and error-page
// scrubbing, and request signing), the origin_lock handler (origin side:
// only signed edge traffic gets in) and the `caddy origin-audit` command.
// The work is done by the engines in scrub/ and audit/; this package is the
// Caddy glue.
package hideorigin

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/internal/metrics"
	"github.com/rampart-edge/caddy-rampart/internal/netaddr"
	"github.com/rampart-edge/caddy-rampart/modules/hideorigin/scrub"
	"github.com/rampart-edge/caddy-rampart/modules/hideorigin/sign"
)

func init() {
	caddy.RegisterModule(Handler{})
	caddy.RegisterModule(OriginLock{})
}

// Handler is hide_origin, the edge-side handler: it removes identifying response
// headers, rewrites every origin identity (addresses, host names, URLs) in
// response headers and text bodies to the public site, replaces 5xx bodies
// with a generic page, keeps client-supplied forwarding headers from the
// origin, and can sign each request for the origin's origin_lock.
//
// Place it before reverse_proxy (the Caddyfile directive order does this).
type Handler struct {
	// Origins are the identities to hide: IPv4 or IPv6 addresses, host
	// names, with or without a port, or URLs. The upstreams of reverse_proxy
	// handlers in the same route list are added automatically (see
	// NoAutoUpstreams), and so is every upstream that actually answers.
	// Global placeholders such as {env.ORIGIN} are replaced at load time.
	Origins []string `json:"origins,omitempty"`

	// Public is what identities become: a scheme and host, e.g.
	// "https://{host}" or "https://www.example.com". Request placeholders
	// are allowed. Default: the request's own scheme and Host.
	Public string `json:"public,omitempty"`

	// Strip adds response header names to the default strip list
	// (scrub.DefaultStrip: Server, X-Powered-By, Via, ...).
	Strip []string `json:"strip,omitempty"`

	// Keep takes response header names off the strip list.
	Keep []string `json:"keep,omitempty"`

	// Body lists the media types whose bodies are rewritten: exact types,
	// "type/*" wildcards and "*/*+suffix" structured-syntax suffixes.
	// Default: scrub.DefaultBodyTypes, every textual type (text/*, */*+xml,
	// */*+json, JavaScript, JSON, XML). An untyped body is rewritten when
	// its first 512 bytes sniff (http.DetectContentType, as browsers do) as
	// one of these types.
	Body []string `json:"body,omitempty"`

	// BodyOff disables body rewriting.
	BodyOff bool `json:"body_off,omitempty"`

	// Errors is "generic" (default): origin 5xx bodies and errors raised by
	// handlers after this one (e.g. reverse_proxy's 502) become a plain page
	// with the request id; or "passthrough": left as they are.
	Errors string `json:"errors,omitempty"`

	// Sign is the key that signs each request for the origin's origin_lock
	// (at least 16 bytes; a global placeholder such as {env.RAMPART_EDGE_KEY}
	// is replaced at load time). Empty: requests are not signed.
	Sign string `json:"sign,omitempty"`

	// NoAutoUpstreams stops the automatic addition of reverse_proxy
	// upstreams (configured and observed) to Origins.
	NoAutoUpstreams bool `json:"no_auto_upstreams,omitempty"`

	ids       *identities
	strip     *scrub.HeaderScrubber
	bodyTypes []string
	generic   bool
	key       *sign.Key
	public    *scrub.Public // set when Public has no placeholders
	// publics caches the default Public per Host header, for http and
	// https; bounded by maxPublics because Host is chosen by clients.
	publics     *[2]sync.Map
	publicCount *atomic.Int64
	logger      *zap.Logger
}

// identities is the current identity set: the configured and sibling ones
// plus upstreams learned when they answer. The matcher is replaced (never
// changed) when an identity is added.
type identities struct {
	mu      sync.Mutex
	list    []scrub.Identity
	learned map[string]bool
	seen    sync.Map // the keys of learned, for a lock-free check
	matcher atomic.Pointer[scrub.Matcher]
}

// requestScrubber removes client forwarding headers (immutable, shared).
var requestScrubber = scrub.NewRequestScrubber()

// maxPublics bounds the per-Host cache of public replacements.
const maxPublics = 1024

// maxLearned bounds how many observed upstream addresses are added to the
// identities at run time.
const maxLearned = 256

// smallBody is the largest Content-Length body that is rewritten in memory
// so that the response keeps an exact Content-Length; larger ones are sent
// chunked.
const smallBody = 64 << 10

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.hide_origin",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision builds the matcher, the strip list and the signing key.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if err := metrics.Register(ctx, metricRewrites, metricActions, metricLock); err != nil {
		return fmt.Errorf("hide_origin: metrics: %v", err)
	}
	if err := h.provisionOptions(false); err != nil {
		return err
	}
	if !h.NoAutoUpstreams {
		for _, s := range siblingUpstreams(ctx, caddy.NewReplacer()) {
			id, err := scrub.ParseIdentity(s)
			if err != nil {
				return fmt.Errorf("hide_origin: upstream of this route: %v", err)
			}
			h.ids.list = append(h.ids.list, id)
		}
	}
	h.ids.matcher.Store(scrub.NewMatcherFromIdentities(h.ids.list))
	h.publics, h.publicCount = new([2]sync.Map), new(atomic.Int64)
	return nil
}

// provisionOptions checks and compiles the options that need no running
// config. checkOptions calls it after every Caddyfile option with adapting
// set, so a bad value is reported at the user's line; values with placeholders
// (an {env.*} key, say) are then left for the load, where they are known.
func (h *Handler) provisionOptions(adapting bool) error {
	repl := caddy.NewReplacer()
	deferred := func(v string) bool { return adapting && strings.Contains(v, "{") }
	h.ids = &identities{learned: map[string]bool{}}
	for _, o := range h.Origins {
		if deferred(o) {
			continue
		}
		id, err := scrub.ParseIdentity(repl.ReplaceKnown(o, ""))
		if err != nil {
			return fmt.Errorf("hide_origin: origin: %v", err)
		}
		h.ids.list = append(h.ids.list, id)
	}

	strip, err := scrub.NewStripSet(h.Strip, h.Keep)
	if err != nil {
		return fmt.Errorf("hide_origin: strip/keep: %v", err)
	}
	h.strip = scrub.NewHeaderScrubber(strip)

	if !h.BodyOff {
		h.bodyTypes = h.Body
		if len(h.bodyTypes) == 0 {
			h.bodyTypes = scrub.DefaultBodyTypes
		}
		for _, t := range h.bodyTypes {
			if !scrub.ValidMediaPattern(t) {
				return fmt.Errorf("hide_origin: body: %q is not a media type, type/* or */*+suffix", t)
			}
		}
	}

	switch h.Errors {
	case "", "generic":
		h.generic = true
	case "passthrough":
	default:
		return fmt.Errorf("hide_origin: errors %q is not generic or passthrough", h.Errors)
	}

	if h.Public != "" && !strings.Contains(h.Public, "{") {
		p, err := scrub.ParsePublic(h.Public)
		if err != nil {
			return fmt.Errorf("hide_origin: %v", err)
		}
		h.public = &p
	}

	if h.Sign != "" && !deferred(h.Sign) {
		secret := repl.ReplaceKnown(h.Sign, "")
		if strings.Contains(secret, "{") || secret == "" {
			return fmt.Errorf("hide_origin: sign: the key %q is empty or has an unknown placeholder", redact(h.Sign))
		}
		k, err := sign.NewKey(secret)
		if err != nil {
			return fmt.Errorf("hide_origin: sign: %v", err)
		}
		h.key = &k
	}
	return nil
}

// redact shows placeholders but hides literal key material.
func redact(s string) string {
	if strings.HasPrefix(s, "{") {
		return s
	}
	return "<" + fmt.Sprint(len(s)) + " bytes>"
}

// learn adds an upstream that answered to the identities.
func (h *Handler) learn(hostport string) *scrub.Matcher {
	st := h.ids
	m := st.matcher.Load()
	if hostport == "" || h.NoAutoUpstreams {
		return m
	}
	if _, ok := st.seen.Load(hostport); ok {
		return m // lock-free for every upstream seen before
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.learned[hostport] || len(st.learned) >= maxLearned {
		return st.matcher.Load()
	}
	st.learned[hostport] = true
	st.seen.Store(hostport, struct{}{})
	id, err := scrub.ParseIdentity(hostport)
	if err != nil {
		return m
	}
	for _, have := range st.list {
		if have == id {
			return m
		}
	}
	st.list = append(st.list, id)
	m = scrub.NewMatcherFromIdentities(st.list)
	st.matcher.Store(m)
	return m
}

// publicFor returns what identities become for this request.
func (h *Handler) publicFor(r *http.Request, repl *caddy.Replacer) (*scrub.Public, error) {
	if h.public != nil {
		return h.public, nil
	}
	if h.Public != "" {
		p, err := scrub.ParsePublic(repl.ReplaceAll(h.Public, ""))
		return &p, err
	}
	scheme, cache := "http", &h.publics[0]
	if r.TLS != nil {
		scheme, cache = "https", &h.publics[1]
	}
	host := r.Host
	if host == "" {
		host = "localhost"
	}
	if p, ok := cache.Load(host); ok {
		return p.(*scrub.Public), nil
	}
	name, port, err := net.SplitHostPort(host)
	if err != nil {
		name, port = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), ""
	}
	if !scrub.ValidPublicHost(name, port) {
		return nil, fmt.Errorf("the request's Host %q cannot be written into responses", host)
	}
	if strings.Contains(name, ":") {
		name = "[" + name + "]"
	}
	if port == "443" && scheme == "https" || port == "80" && scheme == "http" {
		port = ""
	}
	p := scrub.NewPublic(scheme, name, port)
	if h.publicCount.Add(1) <= maxPublics {
		cache.Store(host, &p)
	}
	return &p, nil
}

// ServeHTTP scrubs the request towards the origin and the response towards
// the client.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	h.prepareRequest(r)
	pub, err := h.publicFor(r, repl)
	if err != nil {
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("hide_origin: public: %v", err))
	}
	var before http.Header
	if len(h.bodyTypes) > 0 && r.Method == http.MethodGet && r.Header.Get("Range") != "" {
		before = w.Header().Clone() // a range refetch starts again from these
	}
	sw := h.newWriter(w, r, repl, pub)
	// on every exit path, panics included (reverse_proxy aborts a broken
	// stream with one): the decoder stops and the buffers go back
	defer func() { sw.release() }()
	err = next.ServeHTTP(sw, r)
	if err == nil && sw.retryRange {
		// a partial text body cannot be rewritten with the right offsets:
		// ask again for the whole representation
		metricActions.WithLabelValues("range_refetch").Inc()
		r.Header.Del("Range")
		r.Header.Del("If-Range")
		hdr := w.Header()
		for k := range hdr {
			delete(hdr, k)
		}
		for k, v := range before {
			hdr[k] = v
		}
		h.prepareRequest(r) // a fresh signature: the first one was used
		sw.release()
		sw = h.newWriter(w, r, repl, pub)
		sw.retried = true
		err = next.ServeHTTP(sw, r)
	}
	if err != nil {
		status := http.StatusInternalServerError
		if he, ok := err.(caddyhttp.HandlerError); ok && he.StatusCode != 0 {
			status = he.StatusCode
		}
		if sw.wroteHeader || !h.generic || status < 500 {
			sw.finish()
			return err
		}
		h.logger.Error("request failed; answered with the generic error page",
			zap.String("request_id", requestID(repl)), zap.Int("status", status), zap.Error(err))
		metricActions.WithLabelValues("generic_error").Inc()
		h.writeGeneric(w, status, repl)
		return nil
	}
	return sw.finish()
}

// prepareRequest removes what a client must not pass to the origin and
// signs the request.
func (h *Handler) prepareRequest(r *http.Request) {
	trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	if !trusted {
		requestScrubber.Scrub(r.Header)
	}
	delete(r.Header, sign.Header)
	if len(h.bodyTypes) > 0 {
		if ae := r.Header["Accept-Encoding"]; len(ae) == 1 {
			if f := scrub.FilterAcceptEncoding(ae[0]); f != ae[0] {
				r.Header["Accept-Encoding"] = []string{f}
			}
		} else if len(ae) > 1 {
			r.Header.Set("Accept-Encoding", scrub.FilterAcceptEncoding(strings.Join(ae, ", ")))
		}
	}
	if h.key != nil {
		r.Header.Set(sign.Header, h.key.Sign(sign.Signed{
			Method:   r.Method,
			Host:     r.Host,
			URI:      r.URL.RequestURI(),
			ClientIP: clientIP(r),
			Time:     time.Now(),
		}))
	}
}

// clientIP is the client address Caddy determined (trusted_proxies aware).
func clientIP(r *http.Request) netip.Addr {
	s, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	ip, ok := netaddr.HostIP(s)
	if !ok {
		ip, ok = netaddr.HostIP(r.RemoteAddr)
	}
	if !ok {
		return netip.IPv4Unspecified()
	}
	return ip.WithZone("")
}

// requestID is the request's id, as in Caddy's logs.
func requestID(repl *caddy.Replacer) string {
	id, _ := repl.GetString("http.request.uuid")
	return id
}

// writeGeneric answers with the plain error page.
func (h *Handler) writeGeneric(w http.ResponseWriter, status int, repl *caddy.Replacer) {
	hdr := w.Header()
	for k := range hdr {
		switch k {
		case "Alt-Svc", "Strict-Transport-Security":
		default:
			delete(hdr, k)
		}
	}
	body := fmt.Sprintf("%d %s\nrequest id: %s\n", status, http.StatusText(status), requestID(repl))
	hdr.Set("Content-Type", "text/plain; charset=utf-8")
	hdr.Set("Content-Length", fmt.Sprint(len(body)))
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// rewritable reports whether a Content-Type is in the body list.
func (h *Handler) rewritable(contentType string) bool {
	return len(h.bodyTypes) > 0 && scrub.MatchMediaType(h.bodyTypes, contentType)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
