package stick

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/mholt/caddy-l4/layer4"
	"go.uber.org/zap"

	"github.com/rampart-edge/caddy-rampart/modules/stick/table"
)

func init() {
	caddy.RegisterModule(L4Track{})
	caddy.RegisterModule(L4MatchStick{})
}

// L4Track (`layer4.handlers.track`) counts a layer4 connection under a key
// (conn_cnt, conn_rate, conn_cur held while the rest of the route handles
// the connection, bytes_in/out when stored), closes it when a reject rule
// holds, and otherwise hands it to the next handler. JSON:
//
//	{"handler": "track", "table": "per_sni", "key": "{l4.tls.server_name}",
//	 "reject": [{"data": "conn_cur", "op": "gt", "value": 100}, {"banned": true}]}
//
// Without a key the connection's remote IP is the key (ip or ipv6 tables).
// Key expressions may use any layer4 placeholder, e.g. {l4.tls.server_name}
// once a tls matcher ran. A connection whose key evaluates to nothing valid
// for the table is passed on untracked.
type L4Track struct {
	connTracker
	// The key expression; empty for the remote IP.
	Key string `json:"key,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (L4Track) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "layer4.handlers.track", New: func() caddy.Module { return new(L4Track) }}
}

// Provision finds the table and compiles the rules.
func (h *L4Track) Provision(ctx caddy.Context) error {
	if err := h.provision(ctx, "layer4 track", layerL4); err != nil {
		return err
	}
	return checkAddrKey(h.tbl, h.Key, "layer4 track")
}

func checkAddrKey(t *table.Table, key, directive string) error {
	if typ := t.Schema().Type; key == "" && typ != table.KeyIP && typ != table.KeyIPv6 {
		return fmt.Errorf("%s: table has %s keys; give a key expression, or use an ip table to key by remote address", directive, typ)
	}
	return nil
}

// l4Key evaluates the key of a layer4 connection.
func l4Key(cx *layer4.Connection, t *table.Table, expr string) (table.Key, string, error) {
	if expr == "" {
		k, err := addrKey(t, cx.RemoteAddr())
		return k, cx.RemoteAddr().String(), err
	}
	text := expr
	if repl, ok := cx.Context.Value(layer4.ReplacerCtxKey).(*caddy.Replacer); ok {
		text = repl.ReplaceAll(expr, "")
	}
	k, err := t.Schema().KeyFrom(text)
	return k, text, err
}

// Handle tracks the connection, rejects or continues.
func (h *L4Track) Handle(cx *layer4.Connection, next layer4.Handler) error {
	k, keyText, err := l4Key(cx, h.tbl, h.Key)
	if err != nil {
		h.logger.Debug("connection not tracked", zap.String("table", h.Table), zap.String("key", keyText), zap.Error(err))
		return next.Handle(cx)
	}
	ref, ok := h.open(k, cx.RemoteAddr().String())
	if !ok {
		return cx.Close()
	}
	if !ref.Valid() {
		return next.Handle(cx)
	}
	tc := &trackedConn{Conn: cx.Conn, c: &h.connTracker, ref: ref, countsIO: h.bytes}
	defer tc.release()
	if h.bytes {
		return next.Handle(cx.Wrap(tc))
	}
	return next.Handle(cx)
}

// L4MatchStick (`layer4.matchers.stick`) matches connections whose entry
// satisfies a condition: `stick <table> <data> <op> <value> [key <expr>]` or
// `stick <table> banned [key <expr>]`. JSON:
//
//	{"stick": {"table": "per_ip", "data": "gpc0", "op": "gt", "value": 0}}
//
// The entry is looked up, never created; without a key expression the
// connection's remote IP is the key.
type L4MatchStick struct {
	// The table.
	Table string `json:"table"`
	// The key expression; empty for the remote IP.
	Key string `json:"key,omitempty"`
	Condition

	tbl  *table.Table
	cond compiled
}

// CaddyModule returns the Caddy module information.
func (L4MatchStick) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "layer4.matchers.stick", New: func() caddy.Module { return new(L4MatchStick) }}
}

// Provision finds the table and compiles the condition.
func (m *L4MatchStick) Provision(ctx caddy.Context) error {
	t, err := lookupTable(ctx, m.Table)
	if err != nil {
		return fmt.Errorf("layer4 stick matcher: %v", err)
	}
	m.tbl = t
	if m.cond, err = m.Condition.compile(m.Table, t); err != nil {
		return fmt.Errorf("layer4 stick matcher: %v", err)
	}
	return checkAddrKey(t, m.Key, "layer4 stick matcher")
}

// Match implements layer4.ConnMatcher.
func (m *L4MatchStick) Match(cx *layer4.Connection) (bool, error) {
	k, _, err := l4Key(cx, m.tbl, m.Key)
	if err != nil {
		return false, nil
	}
	return m.cond.lookup(m.tbl, k), nil
}

var (
	_ layer4.NextHandler = (*L4Track)(nil)
	_ layer4.ConnMatcher = (*L4MatchStick)(nil)
)
