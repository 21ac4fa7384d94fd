package stick

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/rampart-edge/caddy-rampart/modules/stick/table"
)

func init() {
	caddy.RegisterModule(Selection{})
}

// Selection (`lb_policy stick <table> [fallback <policy>]`) keeps a
// client on the upstream it was sent to while its table entry lives: the
// entry's server_id holds a hash of the upstream's dial address. When the
// entry has no server_id, or that upstream is unavailable, the fallback
// policy (random by default) chooses and the entry is updated. The key is
// the one track used for the table in this request, else the client IP. The
// table must store server_id; since tables survive reloads, so does
// stickiness.
type Selection struct {
	// The table.
	Table string `json:"table"`
	// The policy that chooses when the entry names no available upstream.
	FallbackRaw json.RawMessage `json:"fallback,omitempty" caddy:"namespace=http.reverse_proxy.selection_policies inline_key=policy"`

	fallback reverseproxy.Selector
	tbl      *table.Table
	col      table.Column
}

// CaddyModule returns the Caddy module information.
func (Selection) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.stick",
		New: func() caddy.Module { return new(Selection) },
	}
}

// Provision finds the table and loads the fallback.
func (s *Selection) Provision(ctx caddy.Context) error {
	t, err := lookupTable(ctx, s.Table)
	if err != nil {
		return fmt.Errorf("lb_policy stick: %v", err)
	}
	col, err := t.Schema().Column("server_id")
	if err != nil {
		return fmt.Errorf("lb_policy stick %s: the table must store server_id", s.Table)
	}
	s.tbl, s.col = t, col
	if s.FallbackRaw == nil {
		s.FallbackRaw = caddyconfig.JSONModuleObject(reverseproxy.RandomSelection{}, "policy", "random", nil)
	}
	mod, err := ctx.LoadModule(s, "FallbackRaw")
	if err != nil {
		return fmt.Errorf("lb_policy stick %s: loading fallback policy: %v", s.Table, err)
	}
	s.fallback = mod.(reverseproxy.Selector)
	return nil
}

// Select returns the client's upstream, or the fallback's choice.
func (s *Selection) Select(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	var ref table.Ref
	if tr, ok := stateOf(r).find(s.Table); ok {
		ref = tr.ref
	} else {
		ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
		k, err := s.tbl.Schema().KeyFrom(ip)
		if err != nil {
			return s.fallback.Select(pool, r, w)
		}
		if ref, err = s.tbl.Acquire(k, table.Events{}); err != nil {
			return s.fallback.Select(pool, r, w)
		}
		defer s.tbl.Release(ref, table.Events{})
	}
	if id, ok := s.tbl.Get(ref, s.col); ok && id != 0 {
		for _, up := range pool {
			if up.Available() && table.UpstreamServerID(up.Dial) == id {
				return up
			}
		}
	}
	up := s.fallback.Select(pool, r, w)
	if up != nil {
		s.tbl.Set(ref, s.col, table.UpstreamServerID(up.Dial))
	}
	return up
}

var (
	_ reverseproxy.Selector = (*Selection)(nil)
	_ caddy.Provisioner     = (*Selection)(nil)
)
