package egress

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// Names is a set of DNS names and wildcards. "*.example.org" matches every
// name below example.org (a.example.org, a.b.example.org), not example.org
// itself. The zero value is an empty set.
type Names struct {
	exact    map[string]struct{}
	suffixes map[string]struct{} // "example.org" for "*.example.org"
}

// ParseNamePattern normalises a configured name or wildcard ("*.example.org").
func ParseNamePattern(s string) (name string, wildcard bool, err error) {
	rest, wildcard := strings.CutPrefix(s, "*.")
	h, err := ParseHost(rest)
	if err != nil {
		return "", false, err
	}
	if h.IP.IsValid() {
		return "", false, fmt.Errorf("%w: %q is an IP address, not a name", ErrInvalidHost, s)
	}
	return h.Name, wildcard, nil
}

// Add adds a name or wildcard.
func (n *Names) Add(pattern string) error {
	name, wildcard, err := ParseNamePattern(pattern)
	if err != nil {
		return err
	}
	if wildcard {
		if n.suffixes == nil {
			n.suffixes = make(map[string]struct{})
		}
		n.suffixes[name] = struct{}{}
		return nil
	}
	if n.exact == nil {
		n.exact = make(map[string]struct{})
	}
	n.exact[name] = struct{}{}
	return nil
}

// Len is the number of names and wildcards in the set.
func (n *Names) Len() int {
	if n == nil {
		return 0
	}
	return len(n.exact) + len(n.suffixes)
}

// Match reports whether a normalised name (as ParseHost returns it) is in
// the set.
func (n *Names) Match(name string) bool {
	if n == nil || name == "" {
		return false
	}
	if _, ok := n.exact[name]; ok {
		return true
	}
	if len(n.suffixes) == 0 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '.' {
			if _, ok := n.suffixes[name[i+1:]]; ok {
				return true
			}
		}
	}
	return false
}

// MaxBlockListLine bounds one block list line.
const MaxBlockListLine = 4096

// ParseBlockList reads a block list: one name or wildcard per line, or a
// hosts-file line ("0.0.0.0 ads.example.net tracker.example.net": the
// address is ignored, the names are blocked). Blank lines and everything
// after '#' are ignored. At most maxEntries names are accepted. Errors name
// the line.
func ParseBlockList(r io.Reader, maxEntries int) (*Names, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), MaxBlockListLine)
	names := new(Names)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		if len(fields) > 1 {
			if _, err := netip.ParseAddr(fields[0]); err != nil {
				return nil, fmt.Errorf("line %d: %q: one name per line, or an address followed by names", line, strings.TrimSpace(text))
			}
			fields = fields[1:]
		}
		for _, f := range fields {
			if err := names.Add(f); err != nil {
				return nil, fmt.Errorf("line %d: %v", line, err)
			}
			if names.Len() > maxEntries {
				return nil, fmt.Errorf("line %d: more than %d names", line, maxEntries)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("after %d lines: %v", names.Len(), err)
	}
	return names, nil
}
