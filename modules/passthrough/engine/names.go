package engine

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Kind is how a route's name pattern matches a server name.
type Kind uint8

const (
	// Exact matches one host name, case-insensitively.
	Exact Kind = iota
	// Wildcard is "*.suffix": it matches exactly one label before the
	// suffix, like a wildcard certificate.
	Wildcard
	// Regexp is "~expr": a regular expression (Go syntax) over the
	// lower-cased server name.
	Regexp
)

// String names the kind as the Caddyfile documentation does.
func (k Kind) String() string {
	switch k {
	case Exact:
		return "exact"
	case Wildcard:
		return "wildcard"
	default:
		return "regexp"
	}
}

// Pattern is one parsed server-name pattern.
type Pattern struct {
	// Kind says how Value matches.
	Kind Kind
	// Value is the lower-cased host name (Exact), the whole "*.suffix"
	// (Wildcard) or the expression without its "~" (Regexp).
	Value string
	re    *regexp.Regexp
}

// MaxNameLength is the longest host name DNS allows.
const MaxNameLength = 253

// ErrEmptyPattern is returned for an empty name pattern.
var ErrEmptyPattern = errors.New("empty name pattern")

// ParsePattern reads a name pattern: "~expr" is a regular expression,
// "*.example.net" a wildcard of one label, anything else an exact host name.
// Host names are checked (letters, digits, hyphens and underscores in labels
// of 1 to 63 characters, no empty label) and lower-cased.
func ParsePattern(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, ErrEmptyPattern
	}
	if expr, ok := strings.CutPrefix(s, "~"); ok {
		if expr == "" {
			return Pattern{}, fmt.Errorf("name pattern %q: empty regular expression", s)
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return Pattern{}, fmt.Errorf("name pattern %q: %v", s, err)
		}
		return Pattern{Kind: Regexp, Value: expr, re: re}, nil
	}
	lower := strings.ToLower(strings.TrimSuffix(s, "."))
	if suffix, ok := strings.CutPrefix(lower, "*."); ok {
		if err := checkHost(suffix); err != nil {
			return Pattern{}, fmt.Errorf("name pattern %q: %v", s, err)
		}
		if !strings.Contains(suffix, ".") {
			return Pattern{}, fmt.Errorf("name pattern %q: a wildcard needs at least two labels after \"*.\"", s)
		}
		return Pattern{Kind: Wildcard, Value: lower}, nil
	}
	if err := checkHost(lower); err != nil {
		return Pattern{}, fmt.Errorf("name pattern %q: %v", s, err)
	}
	return Pattern{Kind: Exact, Value: lower}, nil
}

// checkHost validates a lower-cased host name without wildcard.
func checkHost(h string) error {
	if h == "" {
		return errors.New("empty host name")
	}
	if len(h) > MaxNameLength {
		return fmt.Errorf("host name longer than %d characters", MaxNameLength)
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" {
			return errors.New("empty label")
		}
		if len(label) > 63 {
			return fmt.Errorf("label %q longer than 63 characters", label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' && i > 0 && i < len(label)-1 {
				continue
			}
			return fmt.Errorf("invalid character %q in label %q", c, label)
		}
	}
	return nil
}

// Match reports whether the server name matches the pattern. Names are
// compared case-insensitively; an empty name matches nothing.
func (p Pattern) Match(name string) bool {
	if name == "" {
		return false
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	switch p.Kind {
	case Exact:
		return name == p.Value
	case Wildcard:
		suffix := p.Value[1:] // ".example.net"
		first, rest, ok := strings.Cut(name, ".")
		return ok && first != "" && "."+rest == suffix
	default:
		return p.re.MatchString(name)
	}
}

// Specificity orders patterns for matching: exact names first, then
// wildcards with more labels, then regular expressions in the order they
// were written (the sort must be stable). Lower sorts first.
func (p Pattern) Specificity() int {
	switch p.Kind {
	case Exact:
		return 0
	case Wildcard:
		return 1000 - strings.Count(p.Value, ".")
	default:
		return 2000
	}
}

// String returns the pattern as it is written in a Caddyfile.
func (p Pattern) String() string {
	if p.Kind == Regexp {
		return "~" + p.Value
	}
	return p.Value
}
