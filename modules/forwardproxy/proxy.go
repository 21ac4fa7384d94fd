package forwardproxy

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/internal/netaddr"
	"github.com/rampart-edge/caddy-rampart/modules/forwardproxy/egress"
)

// Rules a request can be refused by before its destination is looked at.
const (
	ruleAllowSource egress.Rule = "allow_source"
	ruleBasicAuth   egress.Rule = "basic_auth"
	ruleMalformed   egress.Rule = "malformed_request"
	ruleHeaderSize  egress.Rule = "max_header_size"
)

// exchange is one proxy request as the access log and the refusal log see
// it.
type exchange struct {
	user     string
	source   string
	host     string
	port     uint16
	resolved netip.Addr
	up, down int64
	start    time.Time
	decision string // "allowed" or the refusing rule
}

func (e *exchange) fields() []zap.Field {
	f := []zap.Field{
		zap.String("user", e.user),
		zap.String("source", e.source),
		zap.String("destination_host", e.host),
		zap.Uint16("destination_port", e.port),
		zap.String("decision", e.decision),
	}
	if e.resolved.IsValid() {
		f = append(f, zap.String("resolved", e.resolved.String()))
	}
	return f
}

// serveProxy authenticates the client, decides the destination and, when
// both pass, tunnels or forwards. The access log gets the forward_proxy
// fields on every exit.
func (fp *ForwardProxy) serveProxy(w http.ResponseWriter, r *http.Request, kind egress.Kind) error {
	ex := &exchange{start: time.Now(), source: r.RemoteAddr}
	defer func() {
		extra, ok := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields)
		if !ok {
			return
		}
		fields := append(ex.fields(),
			zap.Int64("bytes_up", ex.up),
			zap.Int64("bytes_down", ex.down),
			zap.Duration("duration", time.Since(ex.start)))
		extra.Add(zap.Dict("forward_proxy", fields...))
	}()

	target := r.Host
	if kind == egress.Absolute {
		target = r.URL.Host
	}
	host, port, targetErr := splitTarget(target, kind, r.URL.Scheme)
	ex.host, ex.port = host, port

	if rule, status := fp.authenticate(w, r, ex); rule != egress.RuleNone {
		return fp.refuse(w, r, ex, rule, status)
	}
	if targetErr != nil {
		return fp.refuse(w, r, ex, egress.RuleInvalidDestination, http.StatusBadRequest)
	}
	if len(fp.Limits) == 0 {
		return fp.proceed(w, r, kind, ex)
	}
	ex.decision = "limits" // unless the routes let the request through
	err := fp.Limits.Compile(caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		return fp.proceed(w, r, kind, ex)
	})).ServeHTTP(w, r)
	if ex.decision == "limits" {
		// a limits route answered (tarpit, respond): logged as the
		// policy's refusals are; the route wrote the answer
		fp.logger.Info("forward proxy request refused", ex.fields()...)
	}
	return err
}

// proceed checks the request's form and its destination, then tunnels or
// forwards.
func (fp *ForwardProxy) proceed(w http.ResponseWriter, r *http.Request, kind egress.Kind, ex *exchange) error {
	if kind == egress.Connect && (r.ContentLength != 0 || len(r.TransferEncoding) > 0) && r.ProtoMajor == 1 {
		// a body on CONNECT would reach the destination as tunnel bytes
		// the client never meant to send there (request smuggling)
		return fp.refuse(w, r, ex, ruleMalformed, http.StatusBadRequest)
	}
	if kind == egress.Absolute {
		if scheme := r.URL.Scheme; scheme != "http" && scheme != "https" {
			return fp.refuse(w, r, ex, ruleMalformed, http.StatusBadRequest)
		}
		if headerSize(r.Header) > fp.MaxHeaderSize {
			return fp.refuse(w, r, ex, ruleHeaderSize, http.StatusRequestHeaderFieldsTooLarge)
		}
	}

	d := fp.policy.Decide(r.Context(), fp.resolver, kind, ex.host, ex.port)
	if d.Host.IP.IsValid() || d.Host.Name != "" {
		ex.host = d.Host.String()
	}
	if !d.Allowed() {
		status := http.StatusForbidden
		switch d.Rule {
		case egress.RuleInvalidDestination:
			status = http.StatusBadRequest
		case egress.RuleUnresolved:
			status = http.StatusBadGateway
		}
		return fp.refuse(w, r, ex, d.Rule, status)
	}
	ex.decision = "allowed"
	if kind == egress.Connect {
		return fp.tunnel(w, r, d, ex)
	}
	return fp.forward(w, r, d, ex)
}

// authenticate admits clients from allow_source, or with valid
// credentials. It sets {http.auth.user.id} for an authenticated user.
func (fp *ForwardProxy) authenticate(w http.ResponseWriter, r *http.Request, ex *exchange) (egress.Rule, int) {
	if fp.BasicAuth != nil {
		if user, pass, ok := proxyBasicAuth(r); ok {
			if fp.checkPassword(r, user, pass) {
				ex.user = user
				if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
					repl.Set("http.auth.user.id", user)
				}
				return egress.RuleNone, 0
			}
			ex.user = user
		}
	}
	if ip, ok := netaddr.HostIP(r.RemoteAddr); ok && netaddr.Contains(fp.sources, ip) {
		return egress.RuleNone, 0
	}
	if fp.BasicAuth == nil {
		return ruleAllowSource, http.StatusForbidden
	}
	w.Header().Set("Proxy-Authenticate", fmt.Sprintf("Basic realm=%q", fp.BasicAuth.Realm))
	return ruleBasicAuth, http.StatusProxyAuthRequired
}

// checkPassword asks Caddy's basic authentication (hash comparison, fake
// hash for unknown users, cache) about the proxy credentials.
func (fp *ForwardProxy) checkPassword(r *http.Request, user, pass string) bool {
	probe, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, "/", nil)
	probe.SetBasicAuth(user, pass)
	_, ok, err := fp.BasicAuth.Authenticate(discardHeaders{}, probe)
	if err != nil {
		fp.logger.Error("checking proxy credentials", zap.String("user", user), zap.Error(err))
	}
	return ok && err == nil
}

// discardHeaders is the ResponseWriter Caddy's basic authentication writes
// its WWW-Authenticate prompt to: the proxy sends Proxy-Authenticate.
type discardHeaders struct{}

func (discardHeaders) Header() http.Header         { return http.Header{} }
func (discardHeaders) Write(b []byte) (int, error) { return len(b), nil }
func (discardHeaders) WriteHeader(int)             {}

// proxyBasicAuth reads Proxy-Authorization: Basic credentials.
func proxyBasicAuth(r *http.Request) (user, pass string, ok bool) {
	v := r.Header.Get("Proxy-Authorization")
	scheme, cred, found := strings.Cut(v, " ")
	if !found || !strings.EqualFold(scheme, "basic") {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return "", "", false
	}
	user, pass, ok = strings.Cut(string(raw), ":")
	return user, pass, ok
}

// splitTarget splits a CONNECT authority (port required) or an absolute URL
// host (port defaulting by scheme).
func splitTarget(target string, kind egress.Kind, scheme string) (string, uint16, error) {
	host, portText, err := net.SplitHostPort(target)
	if err != nil {
		if kind == egress.Connect {
			return target, 0, err
		}
		host, portText = strings.TrimSuffix(strings.TrimPrefix(target, "["), "]"), "80"
		if scheme == "https" {
			portText = "443"
		}
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return host, 0, fmt.Errorf("bad port %q", portText)
	}
	return host, uint16(port), nil
}

// headerSize is the size of a header as sent on the wire (name, ": ",
// value, CRLF).
func headerSize(h http.Header) int {
	n := 0
	for k, vv := range h {
		for _, v := range vv {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// refuse answers a refused request with a short text naming the rule, and
// logs it with the user, source, destination and rule. Nothing about the
// proxy's network is written to the client.
func (fp *ForwardProxy) refuse(w http.ResponseWriter, r *http.Request, ex *exchange, rule egress.Rule, status int) error {
	ex.decision = string(rule)
	fp.logger.Info("forward proxy request refused", ex.fields()...)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if r.ProtoMajor == 1 {
		// what the client pipelined behind a refused request is not read
		w.Header().Set("Connection", "close")
	}
	w.WriteHeader(status)
	text := "forward_proxy: refused by " + string(rule) + "\n"
	if status == http.StatusProxyAuthRequired {
		text = "forward_proxy: proxy authentication required (basic_auth)\n"
	}
	_, _ = w.Write([]byte(text))
	return nil
}

// dial connects to the first of the decided addresses that answers. It
// never resolves: the addresses are those the policy checked.
func (fp *ForwardProxy) dial(ctx context.Context, d egress.Decision, port uint16, ex *exchange) (net.Conn, error) {
	var lastErr error
	for _, a := range d.Addrs {
		conn, err := fp.dialer.DialContext(ctx, "tcp", netip.AddrPortFrom(a, port).String())
		if err == nil {
			ex.resolved = a
			return conn, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// unreachable answers a request whose allowed destination did not answer,
// logging the cause for the operator only.
func (fp *ForwardProxy) unreachable(w http.ResponseWriter, ex *exchange, err error) error {
	ex.decision = "unreachable"
	fp.logger.Info("forward proxy destination unreachable", append(ex.fields(), zap.Error(err))...)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusBadGateway)
	_, _ = w.Write([]byte("forward_proxy: destination unreachable\n"))
	return nil
}
