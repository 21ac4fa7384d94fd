// Package audit is the engine of `caddy origin-audit`: it requests a site as
// a client would, follows its redirects, and reports every place where an
// origin identity shows (headers, cookies, redirects, bodies, error pages,
// the edge certificate), then checks whether the origin can be reached
// around the edge. It imports no Caddy package.
package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/rampart-edge/caddy-rampart/modules/hideorigin/scrub"
)

// Config is what to audit.
type Config struct {
	// Site is the public URL, e.g. https://example.com.
	Site string
	// Origins are origin addresses (host:port, IP, URL); they are searched
	// for and probed directly (without a port: 80 and 443).
	Origins []string
	// OriginHosts are further identities (host names, addresses) that are
	// searched for but not probed.
	OriginHosts []string
	// Paths are requested in addition to DefaultPaths (or instead, with
	// OnlyPaths).
	Paths []string
	// OnlyPaths drops DefaultPaths.
	OnlyPaths bool
	// Timeout bounds each request (default 10s).
	Timeout time.Duration
	// MaxBody bounds how much of each body is read (default 8 MiB).
	MaxBody int64
	// NoBypass skips the direct-access and certificate checks.
	NoBypass bool
}

// DefaultPaths are requested on every audit: pages that usually exist,
// redirect, do not exist (a random 404) or fail.
var DefaultPaths = []string{
	"/", "/login", "/admin", "/index.php", "/api/", "/error", "/robots.txt", "/favicon.ico",
	"/.well-known/security.txt", "/server-status", "/404-{random}", "/%2e%2e/{random}",
}

// Finding is one place where an origin identity or fingerprint shows.
type Finding struct {
	// URL is the request that showed it ("" for certificate findings).
	URL string `json:"url,omitempty"`
	// Place is header, cookie, redirect, body, error_page, fingerprint,
	// certificate, bypass or origin_certificate.
	Place string `json:"place"`
	// Name is the header name, certificate field or check name.
	Name string `json:"name,omitempty"`
	// Excerpt shows the leak in context.
	Excerpt string `json:"excerpt"`
}

// Check is the result of one bypass probe.
type Check struct {
	Name   string `json:"name"`
	Target string `json:"target"`
	Result string `json:"result"`
	Leak   bool   `json:"leak"`
}

// Report is the audit's outcome.
type Report struct {
	Site     string    `json:"site"`
	Requests int       `json:"requests"`
	Findings []Finding `json:"findings"`
	Checks   []Check   `json:"checks"`
}

// Clean reports whether nothing leaked.
func (r *Report) Clean() bool { return len(r.Findings) == 0 }

// fingerprintHeaders name origin software; they are reported when present.
var fingerprintHeaders = []string{"Server", "X-Powered-By", "X-AspNet-Version", "X-AspNetMvc-Version", "X-Generator", "X-Runtime", "X-Backend-Server", "X-Upstream", "X-Served-By", "Via"}

// stackMarkers show a stack trace or debug page in an error body.
var stackMarkers = []string{"goroutine ", "Traceback (most recent call last)", "Stack trace:", "stack trace", "Exception in thread", "\tat ", ".php on line", "Whoops, looks like", "Werkzeug Debugger"}

type auditor struct {
	cfg     Config
	site    *url.URL
	m       *scrub.Matcher
	client  *http.Client
	report  *Report
	edgeCrt *x509.Certificate
	seen    map[string]bool
}

// Run audits the site. An error means the audit could not run (bad
// configuration, site unreachable); leaks are in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	site, err := url.Parse(cfg.Site)
	if err != nil || site.Host == "" || (site.Scheme != "http" && site.Scheme != "https") {
		return nil, fmt.Errorf("--site %q is not an http(s) URL", cfg.Site)
	}
	if len(cfg.Origins)+len(cfg.OriginHosts) == 0 {
		return nil, errors.New("at least one --origin or --origin-host is required")
	}
	m, err := scrub.NewMatcher(append(append([]string(nil), cfg.Origins...), cfg.OriginHosts...))
	if err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = 8 << 20
	}
	tr := &http.Transport{
		// the audit inspects certificates, it does not trust them
		TLSClientConfig:    &tls.Config{InsecureSkipVerify: true, ServerName: site.Hostname()}, //nolint:gosec
		DisableCompression: true,
		Proxy:              nil,
		DialContext:        (&net.Dialer{Timeout: cfg.Timeout}).DialContext,
	}
	defer tr.CloseIdleConnections()
	a := &auditor{cfg: cfg, site: site, m: m, report: &Report{Site: cfg.Site}, seen: map[string]bool{},
		client: &http.Client{Transport: tr, Timeout: cfg.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	if site.Scheme == "https" {
		if err := a.edgeCertificate(ctx); err != nil {
			return nil, err
		}
	}
	paths := cfg.Paths
	if !cfg.OnlyPaths {
		paths = append(append([]string(nil), DefaultPaths...), cfg.Paths...)
	}
	reached := false
	for _, p := range paths {
		if err := a.follow(ctx, http.MethodGet, p); err == nil {
			reached = true
		}
	}
	if err := a.follow(ctx, http.MethodTrace, "/"); err == nil {
		reached = true
	}
	if !reached {
		return nil, fmt.Errorf("the site %s did not answer any request", cfg.Site)
	}
	if !cfg.NoBypass {
		a.bypass(ctx)
	}
	sort.SliceStable(a.report.Findings, func(i, j int) bool { return a.report.Findings[i].Place < a.report.Findings[j].Place })
	return a.report, nil
}

// ReadPaths reads a --paths file: one path per line, # comments.
func ReadPaths(file string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.HasPrefix(line, "/") {
			return nil, fmt.Errorf("%s: path %q does not start with /", file, line)
		}
		out = append(out, line)
	}
	return out, sc.Err()
}

func randomToken() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (a *auditor) add(f Finding) {
	key := f.URL + "\x00" + f.Place + "\x00" + f.Name + "\x00" + f.Excerpt
	if a.seen[key] {
		return
	}
	a.seen[key] = true
	a.report.Findings = append(a.report.Findings, f)
}

// excerpt shows a match with some context.
func excerpt(b []byte, mt scrub.Match) string {
	s, e := max(0, mt.Start-40), min(len(b), mt.End+40)
	return strings.Join(strings.Fields(string(b[s:e])), " ")
}

func (a *auditor) edgeCertificate(ctx context.Context) error {
	host := a.site.Host
	if a.site.Port() == "" {
		host = net.JoinHostPort(a.site.Hostname(), "443")
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: a.cfg.Timeout},
		Config: &tls.Config{InsecureSkipVerify: true, ServerName: a.site.Hostname()}} //nolint:gosec
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return fmt.Errorf("TLS connection to the site %s: %v", host, err)
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return errors.New("the site presented no certificate")
	}
	a.edgeCrt = certs[0]
	for field, vals := range certNames(a.edgeCrt) {
		for _, v := range vals {
			for _, mt := range a.m.FindAll([]byte(v)) {
				a.add(Finding{Place: "certificate", Name: field, Excerpt: excerpt([]byte(v), mt)})
			}
		}
	}
	return nil
}

func certNames(c *x509.Certificate) map[string][]string {
	out := map[string][]string{"subject_cn": {c.Subject.CommonName}, "san_dns": c.DNSNames}
	for _, ip := range c.IPAddresses {
		out["san_ip"] = append(out["san_ip"], ip.String())
	}
	for _, u := range c.URIs {
		out["san_uri"] = append(out["san_uri"], u.String())
	}
	return out
}

// follow requests a path and follows same-site redirects (at most 10).
func (a *auditor) follow(ctx context.Context, method, path string) error {
	path = strings.ReplaceAll(path, "{random}", randomToken())
	u, err := a.site.Parse(path)
	if err != nil {
		return err
	}
	for hop := 0; hop < 10; hop++ {
		next, err := a.request(ctx, method, u)
		if err != nil || next == nil {
			return err
		}
		if next.Host != a.site.Host || next.Scheme != a.site.Scheme {
			return nil // never follow a redirect off the site (it could be the origin)
		}
		u, method = next, http.MethodGet
	}
	return nil
}

// request sends one request, inspects the response and returns the same-site
// redirect target, if any.
func (a *auditor) request(ctx context.Context, method string, u *url.URL) (*url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept-Encoding", "gzip, zstd, deflate")
	req.Header.Set("User-Agent", "rampart-origin-audit")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	a.report.Requests++
	where := method + " " + u.String()
	for name, vals := range resp.Header {
		place := "header"
		switch name {
		case "Set-Cookie":
			place = "cookie"
		case "Location":
			place = "redirect"
		}
		for _, v := range vals {
			for _, mt := range a.m.FindAll([]byte(v)) {
				a.add(Finding{URL: where, Place: place, Name: name, Excerpt: excerpt([]byte(v), mt)})
			}
		}
	}
	for _, name := range fingerprintHeaders {
		if v := resp.Header.Get(name); v != "" {
			a.add(Finding{URL: where, Place: "fingerprint", Name: name, Excerpt: name + ": " + v})
		}
	}
	body, derr := decodedBody(resp, a.cfg.MaxBody)
	if derr != nil {
		a.add(Finding{URL: where, Place: "body", Name: "undecodable", Excerpt: derr.Error()})
	}
	place := "body"
	if resp.StatusCode >= 500 {
		place = "error_page"
	}
	for _, mt := range a.m.FindAll(body) {
		a.add(Finding{URL: where, Place: place, Name: resp.Header.Get("Content-Type"), Excerpt: excerpt(body, mt)})
	}
	if resp.StatusCode >= 400 {
		for _, marker := range stackMarkers {
			if i := bytes.Index(body, []byte(marker)); i >= 0 {
				a.add(Finding{URL: where, Place: "error_page", Name: "stack trace", Excerpt: excerpt(body, scrub.Match{Start: i, End: i + len(marker)})})
				break
			}
		}
	}
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		next, err := u.Parse(loc)
		if err == nil {
			return next, nil
		}
	}
	return nil, nil
}

// decodedBody reads at most max bytes and undoes every content coding
// (gzip, zstd, deflate), in the reverse of the order they were applied,
// whether they come in one Content-Encoding line or several.
func decodedBody(resp *http.Response, max int64) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(resp.Body, max))
	if err != nil {
		return raw, nil // a cut-short body is still inspected
	}
	var codings []string
	for _, v := range resp.Header.Values("Content-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			if c := strings.ToLower(strings.TrimSpace(part)); c != "" && c != "identity" {
				codings = append(codings, c)
			}
		}
	}
	body := raw
	for i := len(codings) - 1; i >= 0; i-- {
		decoded, err := decode(codings[i], body, max)
		if err != nil {
			return body, err
		}
		body = decoded
	}
	return body, nil
}

// decode undoes one content coding.
func decode(coding string, body []byte, max int64) ([]byte, error) {
	var r io.Reader
	switch coding {
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("gzip: %v", err)
		}
		r = zr
	case "deflate":
		r = flate.NewReader(bytes.NewReader(body))
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("zstd: %v", err)
		}
		defer zr.Close()
		r = zr
	default:
		return nil, fmt.Errorf("content coding %q cannot be inspected", coding)
	}
	out, err := io.ReadAll(io.LimitReader(r, max))
	if err != nil && len(out) == 0 {
		return nil, fmt.Errorf("decoding %s: %v", coding, err)
	}
	return out, nil
}

// probeTargets lists host:port pairs to try directly.
func (a *auditor) probeTargets() []string {
	var out []string
	seen := map[string]bool{}
	add := func(hp string) {
		if !seen[hp] {
			seen[hp] = true
			out = append(out, hp)
		}
	}
	for _, s := range a.cfg.Origins {
		id, err := scrub.ParseIdentity(s)
		if err != nil {
			continue
		}
		host := id.Host
		if id.Port != 0 {
			add(net.JoinHostPort(host, strconv.Itoa(id.Port)))
			continue
		}
		add(net.JoinHostPort(host, "80"))
		add(net.JoinHostPort(host, "443"))
	}
	return out
}

// bypass probes the origin directly: does it serve the site, and does it
// present the site's certificate?
func (a *auditor) bypass(ctx context.Context) {
	for _, target := range a.probeTargets() {
		a.directHTTP(ctx, target)
		a.originCert(ctx, target)
	}
}

func (a *auditor) directHTTP(ctx context.Context, target string) {
	var last string
	for _, scheme := range []string{"http", "https"} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+target+"/", nil)
		if err != nil {
			return
		}
		req.Host = a.site.Host
		resp, err := a.client.Do(req)
		if err != nil {
			last = shortErr(err)
			continue
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		c := Check{Name: "direct_access", Target: scheme + "://" + target}
		switch {
		case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusMisdirectedRequest:
			c.Result = fmt.Sprintf("refused (%d)", resp.StatusCode)
		case resp.StatusCode == http.StatusBadRequest && scheme == "http":
			// an HTTPS port answering plain HTTP: try TLS
			last = "400 to plain HTTP"
			continue
		default:
			c.Result = fmt.Sprintf("origin answers directly (%d)", resp.StatusCode)
			c.Leak = true
			a.add(Finding{URL: c.Target, Place: "bypass", Name: "direct_access", Excerpt: c.Result + " with Host: " + a.site.Host})
		}
		a.report.Checks = append(a.report.Checks, c)
		return
	}
	a.report.Checks = append(a.report.Checks, Check{Name: "direct_access", Target: target, Result: "unreachable: " + last})
}

func (a *auditor) originCert(ctx context.Context, target string) {
	c := Check{Name: "origin_certificate", Target: target}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: a.cfg.Timeout},
		Config: &tls.Config{InsecureSkipVerify: true, ServerName: a.site.Hostname()}} //nolint:gosec
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		c.Result = "no TLS: " + shortErr(err)
		a.report.Checks = append(a.report.Checks, c)
		return
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	switch {
	case len(certs) == 0:
		c.Result = "no certificate"
	case a.edgeCrt != nil && bytes.Equal(certs[0].Raw, a.edgeCrt.Raw):
		c.Result, c.Leak = "presents the site's own certificate", true
	case a.edgeCrt != nil && bytes.Equal(certs[0].RawSubjectPublicKeyInfo, a.edgeCrt.RawSubjectPublicKeyInfo):
		c.Result, c.Leak = "presents a certificate with the site's key", true
	case certs[0].VerifyHostname(a.site.Hostname()) == nil:
		c.Result, c.Leak = "presents a certificate valid for "+a.site.Hostname(), true
	default:
		c.Result = "presents another certificate (" + certs[0].Subject.CommonName + ")"
	}
	if c.Leak {
		a.add(Finding{URL: "tls://" + target, Place: "origin_certificate", Name: "sni " + a.site.Hostname(), Excerpt: c.Result})
	}
	a.report.Checks = append(a.report.Checks, c)
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && len(s) > 80 {
		s = s[i+2:]
	}
	return s
}

// WriteText prints a report for people: each distinct leak once, with the
// number of requests that showed it.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "origin-audit of %s: %d requests\n", r.Site, r.Requests)
	type group struct {
		f     Finding
		count int
	}
	var order []string
	groups := map[string]*group{}
	for _, f := range r.Findings {
		key := f.Place + "\x00" + f.Name + "\x00" + f.Excerpt
		if g, ok := groups[key]; ok {
			g.count++
			continue
		}
		groups[key] = &group{f: f, count: 1}
		order = append(order, key)
	}
	for _, key := range order {
		g := groups[key]
		where := g.f.URL
		if g.count > 1 {
			where = fmt.Sprintf("%s (and %d more)", where, g.count-1)
		}
		fmt.Fprintf(w, "LEAK  %-18s %-28s %s\n      %s\n", g.f.Place, g.f.Name, where, g.f.Excerpt)
	}
	for _, c := range r.Checks {
		mark := "ok  "
		if c.Leak {
			mark = "LEAK"
		}
		fmt.Fprintf(w, "%s  %-18s %s: %s\n", mark, c.Name, c.Target, c.Result)
	}
	if r.Clean() {
		fmt.Fprintln(w, "clean: no origin identity found")
	} else {
		fmt.Fprintf(w, "%d leaks found (%d distinct)\n", len(r.Findings), len(order))
	}
}
