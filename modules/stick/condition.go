package stick

import (
	"fmt"
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/rampart-edge/caddy-rampart/modules/stick/table"
)

// Condition is a test on a table entry: `<data> <op> <value>` (for example
// `http_req_rate gt 100`, `gpc0 gt 0`) or `banned`. It is the grammar of
// the stick matcher, the listener wrapper's and layer4 handler's reject
// rules and the layer4 stick matcher.
type Condition struct {
	// The stored value to compare: conn_cnt, conn_cur, conn_rate, req_cur,
	// http_req_cnt, http_req_rate, http_err_cnt, http_err_rate,
	// http_fail_cnt, http_fail_rate, bytes_in_cnt, bytes_in_rate,
	// bytes_out_cnt, bytes_out_rate, gpc<N>, gpc<N>_rate, gpt<N>,
	// server_id or ban (milliseconds left). Empty when Banned is set.
	Data string `json:"data,omitempty"`
	// Comparison: gt, ge, lt, le, eq or ne.
	Op string `json:"op,omitempty"`
	// The number to compare with.
	Value uint64 `json:"value,omitempty"`
	// True to test whether the entry's ban is in force instead.
	Banned bool `json:"banned,omitempty"`
}

// compiled is a Condition resolved against a table's schema.
type compiled struct {
	col    table.Column
	op     func(a, b uint64) bool
	value  uint64
	banned bool
	text   string
}

var ops = map[string]func(a, b uint64) bool{
	"gt": func(a, b uint64) bool { return a > b },
	"ge": func(a, b uint64) bool { return a >= b },
	"lt": func(a, b uint64) bool { return a < b },
	"le": func(a, b uint64) bool { return a <= b },
	"eq": func(a, b uint64) bool { return a == b },
	"ne": func(a, b uint64) bool { return a != b },
}

// String renders the condition as written in a Caddyfile.
func (c Condition) String() string {
	if c.Banned {
		return "banned"
	}
	return fmt.Sprintf("%s %s %d", c.Data, c.Op, c.Value)
}

// compile checks the condition against the table; errors name the table
// and the offending value.
func (c Condition) compile(tableName string, t *table.Table) (compiled, error) {
	if c.Banned {
		if c.Data != "" || c.Op != "" {
			return compiled{}, fmt.Errorf("stick table %s: `banned` takes no data or op (got %q %q)", tableName, c.Data, c.Op)
		}
		if !t.Schema().Has(table.Ban) {
			return compiled{}, fmt.Errorf("stick table %s: `banned` needs the table to store ban", tableName)
		}
		return compiled{banned: true, text: "banned"}, nil
	}
	col, err := t.Schema().Column(c.Data)
	if err != nil {
		return compiled{}, fmt.Errorf("stick table %s: %v", tableName, err)
	}
	op, ok := ops[c.Op]
	if !ok {
		return compiled{}, fmt.Errorf("stick table %s: unknown comparison %q (want gt, ge, lt, le, eq or ne)", tableName, c.Op)
	}
	return compiled{col: col, op: op, value: c.Value, text: c.String()}, nil
}

// held evaluates the condition on a held entry.
func (c *compiled) held(tr *tracked) bool {
	if c.banned {
		return tr.banned()
	}
	v, ok := tr.get(c.col)
	return ok && c.op(v, c.value)
}

// lookup evaluates the condition on the entry of k without creating it; a
// missing entry reads as zero values (never banned).
func (c *compiled) lookup(t *table.Table, k table.Key) bool {
	if c.banned {
		return t.LookupBanned(k)
	}
	v, _ := t.Lookup(k, c.col)
	return c.op(v, c.value)
}

// compileAll compiles a list of conditions.
func compileAll(tableName string, t *table.Table, conds []Condition) ([]compiled, error) {
	out := make([]compiled, 0, len(conds))
	for _, c := range conds {
		cc, err := c.compile(tableName, t)
		if err != nil {
			return nil, err
		}
		out = append(out, cc)
	}
	return out, nil
}

// firstHeld returns the first condition that holds on a held entry.
func firstHeld(tr *tracked, conds []compiled) (*compiled, bool) {
	for i := range conds {
		if conds[i].held(tr) {
			return &conds[i], true
		}
	}
	return nil, false
}

// parseCondition reads `banned` or `<data> <op> <value>` from args and
// returns the arguments after it.
func parseCondition(args []string, directive string) (Condition, []string, error) {
	if len(args) == 0 {
		return Condition{}, nil, fmt.Errorf("%s: missing condition (want `<data> <op> <value>` or `banned`)", directive)
	}
	if args[0] == "banned" {
		return Condition{Banned: true}, args[1:], nil
	}
	c := Condition{Data: args[0]}
	if len(args) < 2 {
		return Condition{}, nil, fmt.Errorf("%s %s: missing comparison (gt, ge, lt, le, eq or ne)", directive, c.Data)
	}
	c.Op = args[1]
	if _, ok := ops[c.Op]; !ok {
		return Condition{}, nil, fmt.Errorf("%s %s: unknown comparison %q (want gt, ge, lt, le, eq or ne)", directive, c.Data, c.Op)
	}
	if len(args) < 3 {
		return Condition{}, nil, fmt.Errorf("%s %s %s: missing value", directive, c.Data, c.Op)
	}
	v, err := strconv.ParseUint(args[2], 10, 64)
	if err != nil {
		return Condition{}, nil, fmt.Errorf("%s %s %s: value %q is not a non-negative integer", directive, c.Data, c.Op, args[2])
	}
	c.Value = v
	return c, args[3:], nil
}

// parseOneCondition parses args that must hold exactly one condition.
func parseOneCondition(args []string, directive string) (Condition, error) {
	c, rest, err := parseCondition(args, directive)
	if err != nil {
		return Condition{}, err
	}
	if len(rest) > 0 {
		return Condition{}, fmt.Errorf("%s %s: unexpected %q", directive, c, rest[0])
	}
	return c, nil
}

// parseRejectBlock reads `reject <condition>` lines of a block.
func parseRejectBlock(d *caddyfile.Dispenser, directive string) ([]Condition, error) {
	var conds []Condition
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if d.Val() != "reject" {
			return nil, d.Errf("%s: unknown option %q (want reject)", directive, d.Val())
		}
		c, err := parseOneCondition(d.RemainingArgs(), directive+" reject")
		if err != nil {
			return nil, d.Err(err.Error())
		}
		conds = append(conds, c)
	}
	return conds, nil
}
