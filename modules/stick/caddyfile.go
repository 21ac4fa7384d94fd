package stick

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/rampart-edge/caddy-rampart/modules/stick/table"
)

// ParseGlobalOption parses one `stick_table <name> { ... }` global option
// into the stick_tables app, adding to the tables of earlier occurrences:
//
//	stick_table <name> {
//	    type ip|ipv6|integer|string [len <n>]|binary [len <n>]
//	    size <n>[k|m|g]
//	    expire <duration>
//	    store <data type>...
//	    ipv4_prefix <bits>
//	    ipv6_prefix <bits>
//	    shared [async|strict]
//	}
func ParseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	app := &App{Tables: map[string]*TableConfig{}}
	if prev, ok := existing.(httpcaddyfile.App); ok {
		if err := json.Unmarshal(prev.Value, app); err != nil {
			return nil, err
		}
	}
	d.Next() // stick_table
	if !d.NextArg() {
		return nil, d.Err("stick_table: missing table name")
	}
	name := d.Val()
	if _, dup := app.Tables[name]; dup {
		return nil, d.Errf("stick_table %s: defined twice", name)
	}
	if d.NextArg() {
		return nil, d.Errf("stick_table %s: unexpected %q (options go in a block)", name, d.Val())
	}
	tc := &TableConfig{}
	for d.NextBlock(0) {
		opt := d.Val()
		args := d.RemainingArgs()
		need := func(n int) error {
			if len(args) != n {
				return d.Errf("stick_table %s: %s takes %d argument(s), got %d", name, opt, n, len(args))
			}
			return nil
		}
		switch opt {
		case "type":
			if len(args) != 1 && len(args) != 3 {
				return nil, d.Errf("stick_table %s: type takes `<type>` or `<type> len <n>`", name)
			}
			tc.Type = args[0]
			if len(args) == 3 {
				if args[1] != "len" {
					return nil, d.Errf("stick_table %s: type %s: unexpected %q (want len <n>)", name, args[0], args[1])
				}
				n, err := strconv.Atoi(args[2])
				if err != nil || n < 1 {
					return nil, d.Errf("stick_table %s: len %q is not a positive integer", name, args[2])
				}
				tc.Len = n
			}
		case "size":
			if err := need(1); err != nil {
				return nil, err
			}
			n, err := parseSize(args[0])
			if err != nil {
				return nil, d.Errf("stick_table %s: size: %v", name, err)
			}
			tc.Size = n
		case "expire":
			if err := need(1); err != nil {
				return nil, err
			}
			dur, err := caddy.ParseDuration(args[0])
			if err != nil {
				return nil, d.Errf("stick_table %s: expire %q: %v", name, args[0], err)
			}
			tc.Expire = caddy.Duration(dur)
		case "store":
			if len(args) == 0 {
				return nil, d.Errf("stick_table %s: store needs at least one data type", name)
			}
			tc.Store = append(tc.Store, args...)
		case "ipv4_prefix", "ipv6_prefix":
			if err := need(1); err != nil {
				return nil, err
			}
			n, err := strconv.Atoi(args[0])
			if err != nil {
				return nil, d.Errf("stick_table %s: %s %q is not a number", name, opt, args[0])
			}
			if opt == "ipv4_prefix" {
				tc.IPv4Prefix = n
			} else {
				tc.IPv6Prefix = n
			}
		case "shared":
			switch len(args) {
			case 0:
				tc.Shared = sharedAsync
			case 1:
				tc.Shared = args[0]
			default:
				return nil, d.Errf("stick_table %s: shared takes at most one argument (async or strict)", name)
			}
		default:
			return nil, d.Errf("stick_table %s: unknown option %q (want type, size, expire, store, ipv4_prefix, ipv6_prefix, shared)", name, opt)
		}
	}
	// The table's rules live in Validate (JSON configs get them too); run
	// them here as well so that the error points at the user's block.
	if _, err := tc.Validate(name); err != nil {
		return nil, d.Err(err.Error())
	}
	app.Tables[name] = tc
	return httpcaddyfile.App{Name: "stick_tables", Value: caddyconfig.JSON(app, nil)}, nil
}

// parseSize reads a table size: a count with an optional k, m or g suffix
// (powers of 1024, as in HAProxy: 1m is 1048576 entries). Errors quote
// what the user wrote.
func parseSize(text string) (int, error) {
	digits, mult := text, 1
	if n := len(text); n > 0 {
		switch text[n-1] {
		case 'k', 'K':
			digits, mult = text[:n-1], 1<<10
		case 'm', 'M':
			digits, mult = text[:n-1], 1<<20
		case 'g', 'G':
			digits, mult = text[:n-1], 1<<30
		}
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%q is not a positive count (want e.g. 1000, 100k or 1m)", text)
	}
	if n > table.MaxSize/mult {
		return 0, fmt.Errorf("%q is more than the largest table, %d entries", text, table.MaxSize)
	}
	return n * mult, nil
}

// UnmarshalCaddyfile parses `track <table> <key>`.
func (h *Track) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	args := d.RemainingArgs()
	if len(args) != 2 {
		return d.Errf("track: want `track <table> <key expression>`, got %d argument(s)", len(args))
	}
	h.Table, h.Key = args[0], args[1]
	if d.NextBlock(0) {
		return d.Errf("track %s: takes no block", h.Table)
	}
	return nil
}

// UnmarshalCaddyfile parses `tarpit <delay> [<status>]`.
func (h *Tarpit) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	args := d.RemainingArgs()
	if len(args) < 1 || len(args) > 2 {
		return d.Err("tarpit: want `tarpit [<matcher>] <delay> [<status>]`")
	}
	dur, err := caddy.ParseDuration(args[0])
	if err != nil {
		return d.Errf("tarpit: delay %q: %v", args[0], err)
	}
	h.Delay = caddy.Duration(dur)
	if len(args) == 2 {
		if h.StatusCode, err = strconv.Atoi(args[1]); err != nil {
			return d.Errf("tarpit: status %q is not a number", args[1])
		}
	}
	if err := h.Validate(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// parseTarget reads `<table> <args...> [key <expr>]` and returns the args
// between the table and the key clause.
func (t *target) parseTarget(d *caddyfile.Dispenser, directive string) ([]string, error) {
	d.Next()
	args := d.RemainingArgs()
	if len(args) == 0 {
		return nil, d.Errf("%s: missing table name", directive)
	}
	t.Table, args = args[0], args[1:]
	if n := len(args); n >= 2 && args[n-2] == "key" {
		t.Key, args = args[n-1], args[:n-2]
	} else if n >= 1 && args[n-1] == "key" {
		return nil, d.Errf("%s %s: key needs an expression", directive, t.Table)
	}
	if d.NextBlock(0) {
		return nil, d.Errf("%s %s: takes no block", directive, t.Table)
	}
	return args, nil
}

// UnmarshalCaddyfile parses `stick_inc <table> <data> [<n>] [key <expr>]`.
func (h *Inc) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	args, err := h.parseTarget(d, "stick_inc")
	if err != nil {
		return err
	}
	if len(args) < 1 || len(args) > 2 {
		return d.Errf("stick_inc %s: want `<data> [<n>]`, e.g. gpc0", h.Table)
	}
	h.Data = args[0]
	if len(args) == 2 {
		if h.Count, err = parseUintArg("stick_inc", "count", args[1]); err != nil {
			return d.Err(err.Error())
		}
	}
	return nil
}

// UnmarshalCaddyfile parses `stick_set <table> <data> <value> [key <expr>]`.
func (h *Set) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	args, err := h.parseTarget(d, "stick_set")
	if err != nil {
		return err
	}
	if len(args) != 2 {
		return d.Errf("stick_set %s: want `<data> <value>`, e.g. gpt0 3", h.Table)
	}
	h.Data, h.Value = args[0], args[1]
	return nil
}

// UnmarshalCaddyfile parses `stick_ban <table> <duration> [key <expr>]`.
func (h *Ban) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	args, err := h.parseTarget(d, "stick_ban")
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return d.Errf("stick_ban %s: want `<duration>`, e.g. 10m", h.Table)
	}
	dur, err := caddy.ParseDuration(args[0])
	if err != nil {
		return d.Errf("stick_ban %s: duration %q: %v", h.Table, args[0], err)
	}
	h.Duration = caddy.Duration(dur)
	if err := h.Validate(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// parseMatcher reads `<table> <condition> [key <expr>]` of both stick
// matchers.
func parseMatcher(d *caddyfile.Dispenser, directive string, tableName, key *string, cond *Condition) error {
	var t target
	args, err := t.parseTarget(d, directive)
	if err != nil {
		return err
	}
	*tableName, *key = t.Table, t.Key
	c, err := parseOneCondition(args, directive+" "+t.Table)
	if err != nil {
		return d.Err(err.Error())
	}
	*cond = c
	return nil
}

// UnmarshalCaddyfile parses `stick <table> <data> <op> <value> [key <expr>]`
// or `stick <table> banned [key <expr>]`.
func (m *MatchStick) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return parseMatcher(d, "stick", &m.Table, &m.Key, &m.Condition)
}

// UnmarshalCaddyfile parses the layer4 matcher, with the grammar of the HTTP
// one.
func (m *L4MatchStick) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return parseMatcher(d, "stick", &m.Table, &m.Key, &m.Condition)
}

// parseCaddyfile reads `<name> <table> [<key>] { reject <condition> ... }`.
func (c *connTracker) parseCaddyfile(d *caddyfile.Dispenser, directive string, allowKey bool) (string, error) {
	d.Next()
	args := d.RemainingArgs()
	maxArgs := 1
	if allowKey {
		maxArgs = 2
	}
	if len(args) < 1 || len(args) > maxArgs {
		if allowKey {
			return "", d.Errf("%s: want `%s <table> [<key expression>] { reject ... }`", directive, directive)
		}
		return "", d.Errf("%s: want `%s <table> { reject ... }`", directive, directive)
	}
	c.Table = args[0]
	conds, err := parseRejectBlock(d, directive+" "+c.Table)
	if err != nil {
		return "", err
	}
	c.Reject = conds
	if len(args) == 2 {
		return args[1], nil
	}
	return "", nil
}

// UnmarshalCaddyfile parses `stick <table> { reject <condition> ... }` in
// listener_wrappers.
func (lw *ListenerWrapper) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	_, err := lw.parseCaddyfile(d, "stick", false)
	return err
}

// UnmarshalCaddyfile parses `track <table> [<key>] { reject <condition> ... }`
// in a layer4 route.
func (h *L4Track) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	key, err := h.parseCaddyfile(d, "track", true)
	h.Key = key
	return err
}

// UnmarshalCaddyfile parses `lb_policy stick <table> [fallback <policy>
// [<args>]]`; the fallback may also be given in a block.
func (s *Selection) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // policy name
	if !d.NextArg() {
		return d.Err("lb_policy stick: missing table name")
	}
	s.Table = d.Val()
	parseFallback := func() error {
		if !d.NextArg() {
			return d.Errf("lb_policy stick %s: fallback needs a policy name", s.Table)
		}
		if s.FallbackRaw != nil {
			return d.Errf("lb_policy stick %s: fallback given twice", s.Table)
		}
		name := d.Val()
		unm, err := caddyfile.UnmarshalModule(d, "http.reverse_proxy.selection_policies."+name)
		if err != nil {
			return err
		}
		sel, ok := unm.(reverseproxy.Selector)
		if !ok {
			return d.Errf("lb_policy stick %s: %s is not a selection policy", s.Table, name)
		}
		s.FallbackRaw = caddyconfig.JSONModuleObject(sel, "policy", name, nil)
		return nil
	}
	if d.NextArg() {
		if d.Val() != "fallback" {
			return d.Errf("lb_policy stick %s: unexpected %q (want fallback <policy>)", s.Table, d.Val())
		}
		if err := parseFallback(); err != nil {
			return err
		}
	}
	for d.NextBlock(d.Nesting()) {
		if d.Val() != "fallback" {
			return d.Errf("lb_policy stick %s: unknown option %q (want fallback)", s.Table, d.Val())
		}
		if err := parseFallback(); err != nil {
			return err
		}
	}
	return nil
}

var (
	_ caddyfile.Unmarshaler = (*Track)(nil)
	_ caddyfile.Unmarshaler = (*Tarpit)(nil)
	_ caddyfile.Unmarshaler = (*Inc)(nil)
	_ caddyfile.Unmarshaler = (*Set)(nil)
	_ caddyfile.Unmarshaler = (*Ban)(nil)
	_ caddyfile.Unmarshaler = (*MatchStick)(nil)
	_ caddyfile.Unmarshaler = (*L4MatchStick)(nil)
	_ caddyfile.Unmarshaler = (*ListenerWrapper)(nil)
	_ caddyfile.Unmarshaler = (*L4Track)(nil)
	_ caddyfile.Unmarshaler = (*Selection)(nil)
)
