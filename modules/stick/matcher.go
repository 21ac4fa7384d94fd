package stick

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(MatchStick{})
}

// MatchStick (`stick <table> <data> <op> <value> [key <expr>]` or
// `stick <table> banned [key <expr>]`) matches requests whose table entry
// satisfies the condition. The entry is the one track used for the table in
// this request, or the entry of the key expression (looked up, never
// created: a missing entry reads as zeros and is never banned). Without a
// key expression and without a track for the table the matcher does not
// match.
type MatchStick struct {
	target
	Condition

	cond compiled
}

// CaddyModule returns the Caddy module information.
func (MatchStick) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.matchers.stick", New: func() caddy.Module { return new(MatchStick) }}
}

// Provision resolves the table and compiles the condition.
func (m *MatchStick) Provision(ctx caddy.Context) error {
	if err := m.provision(ctx, "stick matcher"); err != nil {
		return err
	}
	c, err := m.Condition.compile(m.Table, m.tbl)
	if err != nil {
		return fmt.Errorf("stick matcher: %v", err)
	}
	m.cond = c
	return nil
}

// Match implements caddyhttp.RequestMatcher.
func (m *MatchStick) Match(r *http.Request) bool {
	ok, _ := m.MatchWithError(r)
	return ok
}

// MatchWithError implements caddyhttp.RequestMatcherWithError.
func (m *MatchStick) MatchWithError(r *http.Request) (bool, error) {
	if m.Key == "" {
		tr, ok := stateOf(r).find(m.Table)
		if !ok {
			return false, nil
		}
		return m.cond.held(tr), nil
	}
	k, err := m.key(r)
	if err != nil {
		return false, nil
	}
	return m.cond.lookup(m.tbl, k), nil
}

var (
	_ caddyhttp.RequestMatcherWithError = (*MatchStick)(nil)
	_ caddy.Provisioner                 = (*MatchStick)(nil)
)
