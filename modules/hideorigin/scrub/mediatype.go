package scrub

import "strings"

// DefaultBodyTypes are the media type patterns whose bodies are rewritten
// by default: every textual type a browser or client reads an address
// out of. "type/*" matches a whole top-level type, "*/*+suffix" a
// structured-syntax suffix (image/svg+xml, application/ld+json,
// application/problem+json, application/xhtml+xml, ...).
var DefaultBodyTypes = []string{
	"text/*",
	"*/*+xml",
	"*/*+json",
	"application/javascript",
	"application/x-javascript",
	"application/ecmascript",
	"application/json",
	"application/xml",
	"application/x-www-form-urlencoded",
}

// ValidMediaPattern reports whether p is a media type ("text/html"), a
// top-level wildcard ("text/*") or a suffix pattern ("*/*+json").
func ValidMediaPattern(p string) bool {
	typ, sub, ok := strings.Cut(p, "/")
	if !ok || typ == "" || sub == "" || strings.ContainsAny(p, " ;,\t") {
		return false
	}
	if typ == "*" {
		return strings.HasPrefix(sub, "*+") && len(sub) > 2 && !strings.Contains(sub[2:], "*")
	}
	return !strings.Contains(typ, "*") && (sub == "*" || !strings.Contains(sub, "*"))
}

// MatchMediaType reports whether a Content-Type value (parameters
// allowed) matches one of the patterns (see ValidMediaPattern).
func MatchMediaType(patterns []string, contentType string) bool {
	if contentType == "" {
		return false
	}
	mt := mediaType(contentType)
	typ, sub, _ := strings.Cut(mt, "/")
	for _, p := range patterns {
		switch {
		case p == mt:
			return true
		case strings.HasPrefix(p, "*/*+"):
			if strings.HasSuffix(sub, p[3:]) {
				return true
			}
		case strings.HasSuffix(p, "/*"):
			if typ == p[:len(p)-2] {
				return true
			}
		}
	}
	return false
}

// mediaType is the lower-case type/subtype of a Content-Type value,
// without parameters (no allocation for the usual lower-case values).
func mediaType(contentType string) string {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.TrimSpace(mt)
	for i := 0; i < len(mt); i++ {
		if 'A' <= mt[i] && mt[i] <= 'Z' {
			return strings.ToLower(mt)
		}
	}
	return mt
}
