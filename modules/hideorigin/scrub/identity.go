// Package scrub is the engine of origin hiding: it finds an origin's
// identities (addresses, host names, URLs) in header values and streamed
// bodies and rewrites them to the public site, and strips identifying
// headers. (The edge-to-origin request signature is package sign.) It
// imports no Caddy package.
package scrub

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"unsafe"
)

// Identity is one origin identity to hide, parsed from configuration: a host
// (IPv4, IPv6 or DNS name) and an optional port.
type Identity struct {
	// Host is the lower-case host name or canonical IP address, without
	// brackets.
	Host string
	// Port is the port given with the identity, or 0.
	Port int
	// IP is set when Host is an IP address.
	IP netip.Addr
}

// String returns the identity as host or host:port (IPv6 in brackets).
func (id Identity) String() string {
	h := id.Host
	if id.IP.Is6() {
		h = "[" + h + "]"
	}
	if id.Port != 0 {
		return h + ":" + strconv.Itoa(id.Port)
	}
	return h
}

// ParseIdentity parses one identity as written in configuration: an IPv4
// address, an IPv6 address (bare or in brackets), a host name, any of these
// with a port, or a URL (http, https, ws, wss) whose host is taken.
func ParseIdentity(s string) (Identity, error) {
	in := s
	s = strings.TrimSpace(s)
	if s == "" {
		return Identity{}, errors.New("empty origin identity")
	}
	if strings.ContainsAny(s, "{}") {
		return Identity{}, fmt.Errorf("origin identity %q contains an unreplaced placeholder", in)
	}
	if i := strings.Index(s, "://"); i >= 0 {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return Identity{}, fmt.Errorf("origin identity %q is not a valid URL", in)
		}
		switch strings.ToLower(u.Scheme) {
		case "http", "https", "ws", "wss":
		default:
			return Identity{}, fmt.Errorf("origin identity %q: scheme %q is not http, https, ws or wss", in, u.Scheme)
		}
		s = u.Host
	}
	var host, port string
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return Identity{}, fmt.Errorf("origin identity %q: missing ']'", in)
		}
		host, port = s[1:end], s[end+1:]
		if port != "" {
			if port[0] != ':' {
				return Identity{}, fmt.Errorf("origin identity %q: unexpected %q after ']'", in, port)
			}
			port = port[1:]
			if port == "" {
				return Identity{}, fmt.Errorf("origin identity %q: empty port", in)
			}
		}
	case strings.Count(s, ":") > 1:
		host = s
	case strings.Contains(s, ":"):
		host, port, _ = strings.Cut(s, ":")
		if port == "" {
			return Identity{}, fmt.Errorf("origin identity %q: empty port", in)
		}
	default:
		host = s
	}
	id := Identity{}
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return Identity{}, fmt.Errorf("origin identity %q: invalid port %q", in, port)
		}
		id.Port = p
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return Identity{}, fmt.Errorf("origin identity %q: IPv6 zones are not supported", in)
		}
		ip = ip.Unmap()
		id.IP, id.Host = ip, ip.String()
		return id, nil
	}
	if strings.Count(s, ":") > 1 || strings.HasPrefix(s, "[") {
		return Identity{}, fmt.Errorf("origin identity %q: invalid IPv6 address", in)
	}
	if err := checkHostname(host); err != nil {
		return Identity{}, fmt.Errorf("origin identity %q: %v", in, err)
	}
	id.Host = strings.ToLower(strings.TrimSuffix(host, "."))
	return id, nil
}

// checkHostname accepts DNS names made of letters, digits, '-' and '_'
// labels separated by dots.
func checkHostname(h string) error {
	h = strings.TrimSuffix(h, ".")
	if h == "" {
		return errors.New("empty host")
	}
	if len(h) > 253 {
		return errors.New("host name longer than 253 characters")
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" {
			return errors.New("empty label in host name")
		}
		if len(label) > 63 {
			return errors.New("host name label longer than 63 characters")
		}
		for i := 0; i < len(label); i++ {
			if !isHostByte(label[i]) {
				return fmt.Errorf("invalid character %q in host name", label[i])
			}
		}
	}
	return nil
}

// tokenKind says how a token relates to its surroundings.
type tokenKind uint8

const (
	kindName     tokenKind = iota // DNS name or IPv4 address
	kindBracket                   // [IPv6]
	kindBareIPv6                  // IPv6 without brackets
)

type token struct {
	text []byte // lower case
	kind tokenKind
}

// Matcher finds origin identities in text. It is immutable and safe for
// concurrent use.
type Matcher struct {
	ids     []Identity
	tokens  []token
	byFirst [256][]int32 // token indexes by first byte (both cases), longest first
	maxTok  int
	exact   map[string]struct{}
	// window is how many leading bytes of every token the token scan
	// looks at: the shortest token's length, at most 8
	window int
	// blocks has, for two bytes x, y (either case) at index x | y<<8, bit
	// k set when some token has them at k, k+1 within its window. nil
	// when window is 1.
	blocks []uint8
	// pairs[a] has bit b set when some token starts with the bytes a, b
	// (either case): most candidates are ruled out by the next byte
	// without looking at a token
	pairs [256][4]uint64
	ips   map[netip.Addr]struct{} // the IP identities, IPv4 unmapped
	hasV4 bool
}

// lookahead is how many bytes past a token the matcher may inspect: a
// trailing dot, an optional ":65535" port (its colon percent-encoded twice
// at most: "%253A") and the boundary byte after it.
const lookahead = 13

// lookback is how many bytes before a token the matcher may inspect: the
// longest scheme prefix, "https://" encoded twice ("https%253A%252F%252F"),
// and one boundary byte.
const lookback = 21

// maxLiteral is how long an address literal in another spelling may be:
// "[0000:0000:0000:0000:0000:ffff:255.255.255.255]" or an IPv4 address in
// padded octal or hex parts.
const maxLiteral = 48

// NewMatcher builds a matcher for the given identities (as accepted by
// ParseIdentity). Duplicates are merged.
func NewMatcher(identities []string) (*Matcher, error) {
	ids := make([]Identity, 0, len(identities))
	for _, s := range identities {
		id, err := ParseIdentity(s)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return NewMatcherFromIdentities(ids), nil
}

// NewMatcherFromIdentities builds a matcher from parsed identities.
func NewMatcherFromIdentities(ids []Identity) *Matcher {
	m := &Matcher{exact: map[string]struct{}{}}
	seenID := map[Identity]bool{}
	seenTok := map[string]bool{}
	add := func(text string, kind tokenKind) {
		if seenTok[text] {
			return
		}
		seenTok[text] = true
		m.tokens = append(m.tokens, token{text: []byte(text), kind: kind})
		m.exact[text] = struct{}{}
	}
	for _, id := range ids {
		if seenID[id] {
			continue
		}
		seenID[id] = true
		m.ids = append(m.ids, id)
		if id.IP.Is6() {
			add("["+id.Host+"]", kindBracket)
			add(id.Host, kindBareIPv6)
			for _, form := range ipv6Forms(id.IP) {
				add("["+form+"]", kindBracket)
				add(form, kindBareIPv6)
			}
			continue
		}
		add(id.Host, kindName)
	}
	for _, id := range m.ids {
		if !id.IP.IsValid() {
			continue
		}
		if m.ips == nil {
			m.ips = map[netip.Addr]struct{}{}
		}
		m.ips[id.IP] = struct{}{}
		m.maxTok = max(m.maxTok, maxLiteral)
		if id.IP.Is4() && !m.hasV4 {
			// other notations are looked for behind "//", "%2F%2F" and
			// "%252F%252F", up to a literal's length ahead
			m.hasV4 = true
			m.maxTok = max(m.maxTok, maxLiteral+len(separators[2].slashes))
			m.pairs['/']['/'>>6] |= 1 << ('/' & 63)
			m.pairs['%']['2'>>6] |= 1 << ('2' & 63)
		}
	}
	for i, t := range m.tokens {
		if len(t.text) > m.maxTok {
			m.maxTok = len(t.text)
		}
		c := t.text[0]
		m.byFirst[c] = append(m.byFirst[c], int32(i))
		if len(t.text) > 1 {
			for _, a := range [2]byte{c, upper(c)} {
				for _, b := range [2]byte{t.text[1], upper(t.text[1])} {
					m.pairs[a][b>>6] |= 1 << (b & 63)
				}
			}
		} else {
			m.pairs[c], m.pairs[upper(c)] = [4]uint64{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}, [4]uint64{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}
		}
		if u := upper(c); u != c {
			m.byFirst[u] = append(m.byFirst[u], int32(i))
		}
	}
	for c := range m.byFirst {
		list := m.byFirst[c]
		sort.SliceStable(list, func(a, b int) bool { return len(m.tokens[list[a]].text) > len(m.tokens[list[b]].text) })
	}
	m.buildBlocks()
	return m
}

// buildBlocks fills the token scan's table of the 2-byte blocks in the
// tokens' windows.
func (m *Matcher) buildBlocks() {
	if len(m.tokens) == 0 {
		return
	}
	m.window = 8
	for _, t := range m.tokens {
		m.window = min(m.window, len(t.text))
	}
	if m.window == 1 {
		return
	}
	m.blocks = make([]uint8, 1<<16)
	for _, t := range m.tokens {
		for k := 0; k+1 < m.window; k++ {
			a, b := t.text[k], t.text[k+1]
			for _, x := range [2]byte{a, upper(a)} {
				for _, y := range [2]byte{b, upper(b)} {
					m.blocks[int(x)|int(y)<<8] |= 1 << k
				}
			}
		}
	}
}

// ipv6Forms returns the uncompressed spellings of an IPv6 address: with
// every group padded to four digits and with leading zeros dropped.
func ipv6Forms(ip netip.Addr) []string {
	full := ip.StringExpanded()
	groups := strings.Split(full, ":")
	for i, g := range groups {
		groups[i] = strings.TrimLeft(g, "0")
		if groups[i] == "" {
			groups[i] = "0"
		}
	}
	return []string{full, strings.Join(groups, ":")}
}

// Identities returns the identities the matcher hides.
func (m *Matcher) Identities() []Identity { return append([]Identity(nil), m.ids...) }

// Empty reports whether the matcher has no identities.
func (m *Matcher) Empty() bool { return m == nil || len(m.tokens) == 0 }

// IsIdentityHost reports whether host (a cookie domain, without port; a
// leading dot is ignored) is exactly one of the identities' hosts.
func (m *Matcher) IsIdentityHost(host string) bool {
	if m.Empty() {
		return false
	}
	host = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(host), "."))
	_, ok := m.exact[host]
	return ok
}

// tail is how many bytes at the end of a buffer cannot be decided before more
// input arrives.
func (m *Matcher) tail() int { return m.maxTok + lookahead }

// Form is the shape in which an identity was found.
type Form uint8

// The forms an identity can take in text.
const (
	FormBare    Form = iota // 10.0.0.10, origin.internal:8080
	FormSlashes             // //origin.internal (scheme-relative)
	FormHTTP                // http:// or https://
	FormWS                  // ws:// or wss://
)

// Match is one occurrence of an identity in a buffer: [Start, End) covers the
// scheme prefix, the host and the port.
type Match struct {
	Start, End int
	Form       Form
	HasPort    bool
	// Encoded is how many times the separators around the host (the
	// scheme's "://", the port's ':') were percent-encoded: 0, 1 ("%3A",
	// "%2F") or 2 ("%253A", "%252F"), as in a URL inside a query.
	Encoded uint8
}

// separators are the scheme and port separators at each encoding level,
// lower case.
var separators = [3]struct{ colon, slashes []byte }{
	{[]byte(":"), []byte("//")},
	{[]byte("%3a"), []byte("%2f%2f")},
	{[]byte("%253a"), []byte("%252f%252f")},
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - 32
	}
	return c
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 32
	}
	return c
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isHostByte(c byte) bool { return isAlnum(c) || c == '-' || c == '_' }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// equalFoldLower compares b with the lower-case pattern p, ASCII case-insensitively.
func equalFoldLower(b, p []byte) bool {
	if len(b) != len(p) {
		return false
	}
	for i := range p {
		if lower(b[i]) != p[i] {
			return false
		}
	}
	return true
}

// Next finds the first identity whose host starts in buf[from:limit]. lo is
// the lowest index a scheme prefix may extend to (bytes before it are no
// longer available for rewriting). Bytes up to len(buf) may be inspected;
// callers that stream guarantee limit <= len(buf)-tail unless the buffer is
// the end of the input.
//
// matchAt is tried only where a match can start: where the token scan
// stops, and at the anchors of address literals in other spellings, found
// with the vectorised bytes.IndexByte: '[' (an IPv6 literal, any IP identity)
// and, with IPv4 identities, "//" and "%2" (another IPv4 notation behind
// slashes, percent-encoded or not).
func (m *Matcher) Next(buf []byte, from, limit, lo int) (Match, bool) {
	if m.Empty() {
		return Match{}, false
	}
	limit = min(limit, len(buf))
	// the next candidate of each kind at or after i; limit when none is left
	tok, bracket, slashes, percent := -1, limit, limit, limit
	if m.ips != nil {
		bracket = -1
	}
	if m.hasV4 {
		slashes, percent = -1, -1
	}
	for i := from; i < limit; {
		if tok < i {
			tok = m.nextToken(buf, i, limit)
		}
		if bracket < i {
			bracket = nextAnchor(buf, i, limit, '[', 0)
		}
		if slashes < i {
			slashes = nextAnchor(buf, i, limit, '/', '/')
		}
		if percent < i {
			percent = nextAnchor(buf, i, limit, '%', '2')
		}
		c := min(tok, bracket, slashes, percent)
		if c >= limit {
			break
		}
		if mt, ok := m.matchAt(buf, c, lo); ok {
			return mt, true
		}
		i = c + 1
	}
	return Match{}, false
}

// anchorSpan is how far ahead an anchor is looked for at once: a page
// without one is searched once, not once per match.
const anchorSpan = 2048

// nextAnchor returns the first index in [i, limit) where the two-byte
// anchor a, b starts (b may lie past limit; b == 0: any byte), or the end
// of the span it searched, or limit. The end of a span is not an anchor
// but harmless to try: matchAt decides.
func nextAnchor(buf []byte, i, limit int, a, b byte) int {
	end := min(limit, i+anchorSpan)
	for i < end {
		j := bytes.IndexByte(buf[i:end], a)
		if j < 0 {
			return end
		}
		i += j
		if b == 0 || i+1 < len(buf) && buf[i+1] == b {
			return i
		}
		i++
	}
	return end
}

// nextToken returns the first index in [i, limit) where a token may start,
// or limit. A token's window (its first w bytes) always holds the 2-byte
// block that starts at one of i+w-2, i+w-2+(w-1), i+w-2+2(w-1), ...: only
// the blocks there are looked up, independently of each other, and a
// block found in a window at offset k puts a candidate k bytes before it.
func (m *Matcher) nextToken(buf []byte, i, limit int) int {
	if m.blocks == nil {
		for ; i < limit; i++ {
			if len(m.byFirst[buf[i]]) > 0 {
				return i
			}
		}
		return limit
	}
	blocks := (*[1 << 16]uint8)(m.blocks)
	w := m.window
	stride := w - 1
	block := func(p int) uint8 { return blocks[uint16(buf[p])|uint16(buf[p+1])<<8] }
	p := i + w - 2
	for p+1 < len(buf) && p-stride < limit {
		if p+3*stride+1 < len(buf) && block(p)|block(p+stride)|block(p+2*stride)|block(p+3*stride) == 0 {
			p += 4 * stride
			continue
		}
		if mask := block(p); mask != 0 {
			for k := w - 2; k >= 0; k-- {
				if mask&(1<<k) != 0 {
					return min(p-k, limit)
				}
			}
		}
		p += stride
	}
	return limit
}

// matchAt tries every way a match can start at buf[i]; it is exact at any
// position (Next only saves the calls that cannot match).
func (m *Matcher) matchAt(buf []byte, i, lo int) (Match, bool) {
	c := buf[i]
	if c == '[' && m.ips != nil {
		if mt, ok := m.literalIPv6(buf, i, lo); ok {
			return mt, true
		}
	}
	// "</p>" and "100%" are common: only "//" and "%2" can start the
	// separators slashesEnd looks for
	if m.hasV4 && i+1 < len(buf) && (c == '/' && buf[i+1] == '/' || c == '%' && buf[i+1] == '2') {
		if j := slashesEnd(buf, i); j > 0 && j < len(buf) && '0' <= buf[j] && buf[j] <= '9' {
			if mt, ok := m.literalIPv4(buf, j, lo); ok {
				return mt, true
			}
		}
	}
	if i+1 < len(buf) {
		if n := buf[i+1]; m.pairs[c][n>>6]&(1<<(n&63)) == 0 {
			return Match{}, false
		}
	}
	for _, ti := range m.byFirst[c] {
		t := &m.tokens[ti]
		end := i + len(t.text)
		if end > len(buf) || !equalFoldLower(buf[i:end], t.text) {
			continue
		}
		if mt, ok := m.confirm(buf, i, end, t.kind, lo); ok {
			return mt, true
		}
	}
	return Match{}, false
}

// confirm checks the boundaries around a token found at buf[i:end], extends
// it with a port and a scheme prefix, and returns the match.
func (m *Matcher) confirm(buf []byte, i, end int, kind tokenKind, lo int) (Match, bool) {
	// left boundary: a host byte before the token is another name, unless
	// it ends a percent-encoded delimiter ("%2F")
	if kind != kindBracket && i > 0 {
		p := buf[i-1]
		switch {
		case kind == kindBareIPv6 && (isHex(p) || p == ':' || p == '.'):
			if !percentBefore(buf, i) {
				return Match{}, false
			}
		case isHostByte(p):
			if !percentBefore(buf, i) {
				return Match{}, false
			}
		case p == '.' && i > 1 && isHostByte(buf[i-2]):
			return Match{}, false // a subdomain of the identity, another host
		}
	}
	// right boundary
	if end < len(buf) {
		n := buf[end]
		switch {
		case kind == kindBareIPv6 && (isHex(n) || n == ':' || n == '.'):
			return Match{}, false
		case isHostByte(n):
			return Match{}, false
		case n == '.' && end+1 < len(buf) && isHostByte(buf[end+1]):
			return Match{}, false
		}
	}
	mt := Match{Start: i, End: end}
	// a trailing dot (the fully qualified name) is part of the host when
	// a port or a path follows; in prose it is a full stop and stays
	if kind != kindBareIPv6 && end+1 < len(buf) && buf[end] == '.' {
		switch n := buf[end+1]; {
		case n == '/' || n == '?' || n == '#', n == '%' && end+3 < len(buf) && (buf[end+2] == '2' || buf[end+2] == '3'):
			mt.End++
		case n == ':' && end+2 < len(buf) && '0' <= buf[end+2] && buf[end+2] <= '9':
			mt.End++
		}
	}
	// port
	if kind != kindBareIPv6 && mt.End < len(buf) && (buf[mt.End] == ':' || buf[mt.End] == '%') {
		for level, sep := range separators {
			j := mt.End + len(sep.colon)
			if j > len(buf) || !equalFoldLower(buf[mt.End:j], sep.colon) {
				continue
			}
			d := j
			for d < len(buf) && d-j < 6 && '0' <= buf[d] && buf[d] <= '9' {
				d++
			}
			if digits := d - j; digits >= 1 && digits <= 5 && (d == len(buf) || !isAlnum(buf[d])) {
				mt.End, mt.HasPort, mt.Encoded = d, true, uint8(level)
			}
			break
		}
	}
	// scheme prefix
	for level, sep := range separators {
		if i == 0 || buf[i-1] != '/' && buf[i-1] != 'f' && buf[i-1] != 'F' {
			break
		}
		s := i - len(sep.slashes)
		if s < lo || !equalFoldLower(buf[s:i], sep.slashes) {
			continue
		}
		mt.Start, mt.Form, mt.Encoded = s, FormSlashes, uint8(level)
		s -= len(sep.colon)
		if s >= lo && equalFoldLower(buf[s:s+len(sep.colon)], sep.colon) {
			for _, sc := range [...]struct {
				name string
				form Form
			}{{"https", FormHTTP}, {"http", FormHTTP}, {"wss", FormWS}, {"ws", FormWS}} {
				b := s - len(sc.name)
				if b >= lo && equalFoldLower(buf[b:s], []byte(sc.name)) && (b == 0 || !isAlnum(buf[b-1]) && buf[b-1] != '+' && buf[b-1] != '.' && buf[b-1] != '-') {
					mt.Start, mt.Form = b, sc.form
					break
				}
			}
		}
		break
	}
	return mt, true
}

// percentBefore reports whether buf[:i] ends with a percent-encoded byte,
// once or twice ("%2F", "%252F"): a delimiter, not part of a host name.
func percentBefore(buf []byte, i int) bool {
	if i < 3 || !isHex(buf[i-2]) || !isHex(buf[i-1]) {
		return false
	}
	return buf[i-3] == '%' || i >= 5 && buf[i-5] == '%' && buf[i-4] == '2' && buf[i-3] == '5' // "%2F", "%252F"
}

// slashesEnd returns the index after the "//" (or "%2F%2F", "%252F%252F")
// that starts at buf[i], or -1.
func slashesEnd(buf []byte, i int) int {
	for _, sep := range separators {
		if e := i + len(sep.slashes); e <= len(buf) && equalFoldLower(buf[i:e], sep.slashes) {
			return e
		}
	}
	return -1
}

// literalIPv6 matches an IPv6 literal in brackets at buf[i] in any
// spelling (zeros compressed anywhere or not, groups padded or not,
// IPv4-mapped) that names an IP identity.
func (m *Matcher) literalIPv6(buf []byte, i, lo int) (Match, bool) {
	end := i + 1
	for end < len(buf) && end-i < maxLiteral && (isHex(buf[end]) || buf[end] == ':' || buf[end] == '.') {
		end++
	}
	if end >= len(buf) || buf[end] != ']' || end == i+1 {
		return Match{}, false
	}
	ip, err := netip.ParseAddr(unsafe.String(&buf[i+1], end-i-1))
	if err != nil || !ip.Is6() {
		return Match{}, false
	}
	if _, ok := m.ips[ip.Unmap()]; !ok {
		return Match{}, false
	}
	return m.confirm(buf, i, end+1, kindBracket, lo)
}

// literalIPv4 matches the host of a URL at buf[i] that a URL parser reads
// as an IPv4 identity: one to four parts, each decimal, octal (leading 0)
// or hex (0x), as in http://167772170/, http://012.0.0.012/,
// http://0x0a00000a/ (the WHATWG URL standard's IPv4 parser).
func (m *Matcher) literalIPv4(buf []byte, i, lo int) (Match, bool) {
	end := i
	for end < len(buf) && end-i < maxLiteral && (isHex(buf[end]) || buf[end] == 'x' || buf[end] == 'X' || buf[end] == '.') {
		end++
	}
	host := buf[i:end]
	for len(host) > 0 && host[len(host)-1] == '.' {
		host = host[:len(host)-1] // a trailing dot: confirm takes it in
	}
	ip, ok := parseURLIPv4(host)
	if !ok {
		return Match{}, false
	}
	if _, ok := m.ips[ip]; !ok {
		return Match{}, false
	}
	return m.confirm(buf, i, i+len(host), kindName, lo)
}

// parseURLIPv4 parses an IPv4 address as the WHATWG URL standard does.
func parseURLIPv4(s []byte) (netip.Addr, bool) {
	var parts [4]uint64
	n := 0
	for len(s) > 0 {
		if n == 4 {
			return netip.Addr{}, false
		}
		part := s
		if j := indexByte(s, '.'); j >= 0 {
			part, s = s[:j], s[j+1:]
			if len(s) == 0 {
				return netip.Addr{}, false
			}
		} else {
			s = nil
		}
		v, ok := parseURLIPv4Part(part)
		if !ok {
			return netip.Addr{}, false
		}
		parts[n] = v
		n++
	}
	if n == 0 {
		return netip.Addr{}, false
	}
	for k := 0; k < n-1; k++ {
		if parts[k] > 255 {
			return netip.Addr{}, false
		}
	}
	last := parts[n-1]
	if last >= 1<<(8*(5-n)) {
		return netip.Addr{}, false
	}
	var v uint32
	for k := 0; k < n-1; k++ {
		v |= uint32(parts[k]) << (8 * (3 - k))
	}
	v |= uint32(last)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseURLIPv4Part parses one part: decimal, 0-prefixed octal or 0x hex.
func parseURLIPv4Part(p []byte) (uint64, bool) {
	base := uint64(10)
	switch {
	case len(p) >= 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X'):
		base, p = 16, p[2:]
		if len(p) == 0 {
			return 0, true
		}
	case len(p) >= 2 && p[0] == '0':
		base, p = 8, p[1:]
	case len(p) == 0:
		return 0, false
	}
	var v uint64
	for _, c := range p {
		var d uint64
		switch {
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case 'a' <= c && c <= 'f':
			d = uint64(c-'a') + 10
		case 'A' <= c && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		v = v*base + d
		if v > 1<<32 {
			return 0, false
		}
	}
	return v, true
}

func indexByte(b []byte, c byte) int {
	for i := range b {
		if b[i] == c {
			return i
		}
	}
	return -1
}

// Public is what identities become: the public site's scheme, host name and
// port.
type Public struct {
	// Scheme is "https" or "http".
	Scheme string
	// Host is the host name or address (IPv6 in brackets).
	Host string
	// Port is the explicit port, or "" for the scheme's default.
	Port string

	// the replacement of each form, by encoding level of the separators
	bOrigin, bWS, bSlashes, bHostport [3][]byte
	bHost                             []byte
}

// ParsePublic parses the public origin, e.g. "https://example.com" or
// "http://localhost:8080". A missing scheme means https.
func ParsePublic(s string) (Public, error) {
	in := s
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return Public{}, fmt.Errorf("public %q is not a URL with a host", in)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return Public{}, fmt.Errorf("public %q: scheme must be http or https", in)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return Public{}, fmt.Errorf("public %q: only scheme, host and port are allowed", in)
	}
	host, port := u.Hostname(), u.Port()
	if !ValidPublicHost(host, port) {
		return Public{}, fmt.Errorf("public %q: invalid host or port", in)
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port == "443" && scheme == "https" || port == "80" && scheme == "http" {
		port = ""
	}
	return NewPublic(scheme, host, port), nil
}

// ValidPublicHost reports whether host (a DNS name, IPv4, or IPv6 without
// brackets) and port (digits or empty) are safe to write into headers and
// bodies. A request's Host header is chosen by the client: anything else
// (quotes, parentheses, '+', ...) could be reflected into a page.
func ValidPublicHost(host, port string) bool {
	if host == "" || len(host) > 253 || len(port) > 5 {
		return false
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return false
		}
	}
	if strings.Contains(host, ":") {
		_, err := netip.ParseAddr(host)
		return err == nil && !strings.Contains(host, "%")
	}
	return checkHostname(host) == nil
}

// NewPublic builds a Public from parts that are already valid.
func NewPublic(scheme, host, port string) Public {
	p := Public{Scheme: scheme, Host: host, Port: port}
	hostport := host
	if port != "" {
		hostport += ":" + port
	}
	ws := "wss"
	if scheme == "http" {
		ws = "ws"
	}
	for level := range separators {
		sep := separators[level]
		enc := strings.NewReplacer(":", strings.ToUpper(string(sep.colon)), "/", strings.ToUpper(string(sep.slashes[:len(sep.slashes)/2])))
		p.bOrigin[level] = []byte(enc.Replace(scheme + "://" + hostport))
		p.bWS[level] = []byte(enc.Replace(ws + "://" + hostport))
		p.bSlashes[level] = []byte(enc.Replace("//" + hostport))
		p.bHostport[level] = []byte(enc.Replace(hostport))
	}
	p.bHost = []byte(host)
	return p
}

// replacementBytes returns what a match becomes.
func (p *Public) replacementBytes(mt Match) []byte {
	switch mt.Form {
	case FormHTTP:
		return p.bOrigin[mt.Encoded]
	case FormWS:
		return p.bWS[mt.Encoded]
	case FormSlashes:
		return p.bSlashes[mt.Encoded]
	}
	if mt.HasPort {
		return p.bHostport[mt.Encoded]
	}
	return p.bHost
}

// ReplaceString rewrites every identity in s; it returns s itself and 0 when
// nothing matched.
func (m *Matcher) ReplaceString(s string, p *Public) (string, int) {
	if m.Empty() || len(s) < 1 {
		return s, 0
	}
	buf := unsafe.Slice(unsafe.StringData(s), len(s)) // read only
	var b strings.Builder
	emitted, n := 0, 0
	for pos := 0; ; {
		mt, ok := m.Next(buf, pos, len(buf), emitted)
		if !ok {
			break
		}
		if n == 0 {
			b.Grow(len(s) + 16)
		}
		b.Write(buf[emitted:mt.Start])
		b.Write(p.replacementBytes(mt))
		emitted, pos, n = mt.End, mt.End, n+1
	}
	if n == 0 {
		return s, 0
	}
	b.Write(buf[emitted:])
	return b.String(), n
}

// Contains reports whether s holds an identity.
func (m *Matcher) Contains(s string) bool {
	if m.Empty() {
		return false
	}
	buf := unsafe.Slice(unsafe.StringData(s), len(s)) // read only
	_, ok := m.Next(buf, 0, len(buf), 0)
	return ok
}

// FindAll returns every match in s (used by the leak auditor).
func (m *Matcher) FindAll(b []byte) []Match {
	var out []Match
	for pos := 0; ; {
		mt, ok := m.Next(b, pos, len(b), pos)
		if !ok {
			return out
		}
		out = append(out, mt)
		pos = mt.End
	}
}
