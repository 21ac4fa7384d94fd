package scrub

import (
	"fmt"
	"net/http"
	"net/textproto"
	"sort"
	"strings"
)

// DefaultStrip is the list of response headers removed by default: they name
// the origin's software, its version or the machine that answered. Caddy's
// own Via is among them.
var DefaultStrip = []string{
	"Server",
	"X-Powered-By",
	"Via",
	"X-AspNet-Version",
	"X-AspNetMvc-Version",
	"X-Backend-Server",
	"X-Backend",
	"X-Backend-Host",
	"X-Served-By",
	"X-Server",
	"X-Server-Name",
	"X-Host",
	"X-Origin-Server",
	"X-Upstream",
	"X-Upstream-Addr",
	"X-Real-Server",
	"X-Forwarded-Server",
	"X-Runtime",
	"X-Generator",
	"X-Drupal-Cache",
	"X-Drupal-Dynamic-Cache",
	"X-Varnish",
	"X-Debug-Token",
	"X-Debug-Token-Link",
	"X-Application-Context",
	"X-Litespeed-Cache",
	"X-Turbo-Charged-By",
	"X-Pingback",
}

// StripSet is a set of canonical header names to remove.
type StripSet map[string]struct{}

// stripFilter is a quick pre-check in front of a StripSet: bit len(name)
// of entry name[0] is set when some stripped name has that first byte and
// length, so most headers (Content-Type, Date, ...) never touch the map.
type stripFilter [256]uint64

func (f *stripFilter) add(name string) {
	if len(name) < 64 {
		f[name[0]] |= 1 << len(name)
	} else {
		f[name[0]] |= 1 // long names: always look them up
	}
}

func (f *stripFilter) maybe(name string) bool {
	if name == "" {
		return false
	}
	bits := f[name[0]]
	if len(name) >= 64 {
		return bits&1 != 0
	}
	return bits&(1<<len(name)) != 0
}

// filter returns the quick pre-check for this set.
func (s StripSet) filter() *stripFilter {
	f := new(stripFilter)
	for name := range s {
		f.add(name)
	}
	return f
}

// NewStripSet returns DefaultStrip plus add minus keep. Names are checked to
// be valid header field names.
func NewStripSet(add, keep []string) (StripSet, error) {
	set := StripSet{}
	for _, h := range DefaultStrip {
		set[textproto.CanonicalMIMEHeaderKey(h)] = struct{}{}
	}
	for _, list := range [][]string{add, keep} {
		for _, h := range list {
			if !validHeaderName(h) {
				return nil, fmt.Errorf("invalid header name %q", h)
			}
		}
	}
	for _, h := range add {
		set[textproto.CanonicalMIMEHeaderKey(h)] = struct{}{}
	}
	for _, h := range keep {
		delete(set, textproto.CanonicalMIMEHeaderKey(h))
	}
	return set, nil
}

// Names returns the set's header names, sorted.
func (s StripSet) Names() []string {
	out := make([]string, 0, len(s))
	for h := range s {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// ScrubHeaders removes the strip set from h and rewrites every identity in
// every remaining value for p. Set-Cookie loses a Domain attribute that names
// an identity (the cookie becomes host-only for the public site); Alt-Svc
// entries that name an identity are dropped (they advertise the origin's own
// endpoints). It returns how many values were changed or removed.
func (m *Matcher) ScrubHeaders(h http.Header, strip StripSet, p *Public) int {
	return m.scrubHeaders(h, strip, strip.filter(), p)
}

// HeaderScrubber is ScrubHeaders with the strip set's pre-check built once.
type HeaderScrubber struct {
	strip  StripSet
	filter *stripFilter
}

// NewHeaderScrubber prepares a strip set for repeated use.
func NewHeaderScrubber(strip StripSet) *HeaderScrubber {
	return &HeaderScrubber{strip: strip, filter: strip.filter()}
}

// Scrub is ScrubHeaders for m and p.
func (hs *HeaderScrubber) Scrub(m *Matcher, h http.Header, p *Public) int {
	return m.scrubHeaders(h, hs.strip, hs.filter, p)
}

func (m *Matcher) scrubHeaders(h http.Header, strip StripSet, f *stripFilter, p *Public) int {
	n := 0
	for name, vals := range h {
		if f.maybe(name) {
			if _, ok := strip[name]; ok {
				delete(h, name)
				n++
				continue
			}
		}
		if m.Empty() {
			continue
		}
		switch name {
		case "Set-Cookie":
			for i, v := range vals {
				nv, c := m.ScrubSetCookie(v, p)
				vals[i] = nv
				n += c
			}
		case "Alt-Svc":
			kept := vals[:0]
			for _, v := range vals {
				nv, c := m.ScrubAltSvc(v)
				n += c
				if nv != "" {
					kept = append(kept, nv)
				}
			}
			if len(kept) == 0 {
				delete(h, name)
			} else {
				h[name] = kept
			}
		default:
			for i, v := range vals {
				nv, c := m.ReplaceString(v, p)
				vals[i] = nv
				n += c
			}
		}
	}
	return n
}

// ScrubSetCookie rewrites one Set-Cookie value: a Domain attribute naming an
// identity is removed, identities elsewhere are replaced.
func (m *Matcher) ScrubSetCookie(v string, p *Public) (string, int) {
	if !m.Contains(v) {
		return v, 0 // a Domain naming an identity is an occurrence too
	}
	parts := strings.Split(v, ";")
	n := 0
	kept := parts[:0]
	for i, part := range parts {
		if i > 0 {
			name, val, _ := strings.Cut(part, "=")
			if strings.EqualFold(strings.TrimSpace(name), "domain") && m.IsIdentityHost(val) {
				n++
				continue
			}
		}
		np, c := m.ReplaceString(part, p)
		n += c
		kept = append(kept, np)
	}
	if n == 0 {
		return v, 0
	}
	return strings.Join(kept, ";"), n
}

// ScrubAltSvc drops the comma-separated Alt-Svc alternatives that name an
// identity; it returns "" when none is left.
func (m *Matcher) ScrubAltSvc(v string) (string, int) {
	if !m.Contains(v) {
		return v, 0
	}
	alts := strings.Split(v, ",")
	kept := alts[:0]
	n := 0
	for _, a := range alts {
		if len(m.FindAll([]byte(a))) > 0 {
			n++
			continue
		}
		kept = append(kept, a)
	}
	if n == 0 {
		return v, 0
	}
	return strings.TrimSpace(strings.Join(kept, ",")), n
}

// ClientForwardingHeaders are request headers in which a client can claim
// addresses for itself or earlier hops. The edge removes them from requests
// that do not come from a trusted proxy, so the origin only ever sees the
// chain the edge builds.
var ClientForwardingHeaders = []string{
	"X-Forwarded-For",
	"X-Forwarded-Host",
	"X-Forwarded-Proto",
	"X-Forwarded-Port",
	"X-Forwarded-Server",
	"X-Original-Forwarded-For",
	"Forwarded",
	"X-Real-Ip",
	"X-Client-Ip",
	"X-Cluster-Client-Ip",
	"Client-Ip",
	"True-Client-Ip",
	"Cf-Connecting-Ip",
	"Fastly-Client-Ip",
}

// RequestScrubber removes ClientForwardingHeaders from request headers. It
// walks the request's few headers with a quick pre-check instead of
// deleting each of the fourteen names (a hash each).
type RequestScrubber struct {
	set    StripSet
	filter *stripFilter
}

// NewRequestScrubber prepares the client forwarding header list.
func NewRequestScrubber() *RequestScrubber {
	set := StripSet{}
	for _, h := range ClientForwardingHeaders {
		set[h] = struct{}{}
	}
	return &RequestScrubber{set: set, filter: set.filter()}
}

// Scrub removes the client forwarding headers from h.
func (rs *RequestScrubber) Scrub(h http.Header) {
	for name := range h {
		if rs.filter.maybe(name) {
			if _, ok := rs.set[name]; ok {
				delete(h, name)
			}
		}
	}
}
