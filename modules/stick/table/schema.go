// Package table is the stick-table engine: typed keys, HAProxy's data types,
// two-period rate counters, a sharded store with bounded memory, CLOCK eviction
// that spares entries held by live connections or requests, idle expiry, and
// per-entry deltas for replication. It imports no Caddy package.
package table

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// KeyType is the type of a table's keys.
type KeyType uint8

// The key types of HAProxy's stick-table directive.
const (
	KeyIP      KeyType = iota // IPv4 and IPv6 addresses (IPv4 stored as IPv4-mapped IPv6)
	KeyIPv6                   // same storage as KeyIP; kept as its own name for HAProxy users
	KeyInteger                // signed 64-bit integers
	KeyString                 // strings truncated to Schema.KeyLen bytes
	KeyBinary                 // byte strings truncated or zero-padded to Schema.KeyLen bytes
)

var keyTypeNames = [...]string{"ip", "ipv6", "integer", "string", "binary"}

// String returns the key type's configuration name.
func (k KeyType) String() string {
	if int(k) < len(keyTypeNames) {
		return keyTypeNames[k]
	}
	return "unknown"
}

// ParseKeyType parses ip, ipv6, integer, string or binary.
func ParseKeyType(s string) (KeyType, error) {
	for i, n := range keyTypeNames {
		if s == n {
			return KeyType(i), nil
		}
	}
	return 0, fmt.Errorf("unknown key type %q (want ip, ipv6, integer, string or binary)", s)
}

// Kind is a stored data type.
type Kind uint8

// The data types. Names follow HAProxy's `store` keywords; ReqCur and Ban are
// Rampart's additions (requests in flight, and a ban deadline).
const (
	ConnCnt Kind = iota
	ConnCur
	ConnRate
	ReqCur
	HTTPReqCnt
	HTTPReqRate
	HTTPErrCnt
	HTTPErrRate
	HTTPFailCnt
	HTTPFailRate
	BytesInCnt
	BytesInRate
	BytesOutCnt
	BytesOutRate
	GPC
	GPCRate
	GPT
	ServerID
	Ban
	numKinds
)

var kindNames = [numKinds]string{
	"conn_cnt", "conn_cur", "conn_rate", "req_cur",
	"http_req_cnt", "http_req_rate", "http_err_cnt", "http_err_rate",
	"http_fail_cnt", "http_fail_rate", "bytes_in_cnt", "bytes_in_rate",
	"bytes_out_cnt", "bytes_out_rate", "gpc", "gpc_rate", "gpt", "server_id", "ban",
}

// String returns the kind's store keyword.
func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return "unknown"
}

// isRate reports whether the kind is a two-period rate.
func (k Kind) isRate() bool {
	switch k {
	case ConnRate, HTTPReqRate, HTTPErrRate, HTTPFailRate, BytesInRate, BytesOutRate, GPCRate:
		return true
	}
	return false
}

// wide reports whether the kind's values are 64-bit (bytes counters and ban).
func (k Kind) wide() bool {
	return k == BytesInCnt || k == BytesInRate || k == BytesOutCnt || k == BytesOutRate || k == Ban
}

// summable reports whether values of the kind add up across cluster nodes
// (counters and rates); gauges, tags, server_id and ban do not.
func (k Kind) summable() bool {
	switch k {
	case ConnCur, ReqCur, GPT, ServerID, Ban:
		return false
	}
	return true
}

// Field is one stored data type: an array of Count elements for gpc, gpc_rate
// and gpt, one element otherwise; Period for rates.
type Field struct {
	// The data type.
	Kind Kind
	// Elements of gpc, gpc_rate and gpt arrays (1 for the others).
	Count int
	// The period of a rate (0 for the others).
	Period time.Duration

	off   int // word offset of the field in an entry's data
	width int // words per element
	delta int // word offset of the element deltas (replicated schemas), -1 if none
	// remote is the word offset of the other nodes' sum of a gauge
	// (conn_cur, req_cur) in replicated schemas, -1 if none.
	remote int
	// own is the word offset of this node's own counts of a summable field
	// (as the field: rates keep their windows) in replicated schemas, -1 if
	// none: the admin API's share of this edge.
	own int
}

// Schema describes a table: key type and the stored fields. Two tables with
// equal schemas (Compatible) can share entries across a config reload.
type Schema struct {
	Type       KeyType
	KeyLen     int // string and binary keys; 32 by default, as in HAProxy
	IPv4Prefix int // 0 or 32: one entry per address; less groups by prefix
	IPv6Prefix int // 0 or 128: one entry per address; less groups by prefix
	Fields     []Field
	// Replicated keeps, per entry, the deltas since the last sync and the
	// other nodes' gauges, for cluster mode.
	Replicated bool

	stride  int
	byKind  [numKinds]int8
	columns []Column
}

// DefaultKeyLen is the length of string and binary keys when none is given.
const DefaultKeyLen = 32

// Column names one readable value: a field and an element of it.
type Column struct {
	// The value's name: conn_cnt, http_req_rate, gpc0, gpc1_rate, gpt0, ...
	Name  string
	field int
	elem  int
}

// Init checks the schema and computes its layout. Parse calls it; call it
// after building a Schema by hand.
func (s *Schema) Init() error {
	if s.Type > KeyBinary {
		return fmt.Errorf("unknown key type %d", s.Type)
	}
	if s.KeyLen == 0 && (s.Type == KeyString || s.Type == KeyBinary) {
		s.KeyLen = DefaultKeyLen
	}
	if s.KeyLen < 0 || s.KeyLen > 1024 {
		return fmt.Errorf("key len %d out of range 1..1024", s.KeyLen)
	}
	if s.IPv4Prefix < 0 || s.IPv4Prefix > 32 {
		return fmt.Errorf("ipv4_prefix %d out of range 1..32", s.IPv4Prefix)
	}
	if s.IPv6Prefix < 0 || s.IPv6Prefix > 128 {
		return fmt.Errorf("ipv6_prefix %d out of range 1..128", s.IPv6Prefix)
	}
	if (s.IPv4Prefix != 0 || s.IPv6Prefix != 0) && s.Type != KeyIP && s.Type != KeyIPv6 {
		return fmt.Errorf("ipv4_prefix and ipv6_prefix need an ip or ipv6 table, not %s", s.Type)
	}
	for i := range s.byKind {
		s.byKind[i] = -1
	}
	s.columns = s.columns[:0]
	off := 0
	for i := range s.Fields {
		f := &s.Fields[i]
		if f.Kind >= numKinds {
			return fmt.Errorf("unknown data type %d", f.Kind)
		}
		if s.byKind[f.Kind] >= 0 {
			return fmt.Errorf("data type %s stored twice", f.Kind)
		}
		s.byKind[f.Kind] = int8(i)
		switch f.Kind {
		case GPC, GPCRate, GPT:
			if f.Count < 1 || f.Count > 100 {
				return fmt.Errorf("%s: element count %d out of range 1..100", f.Kind, f.Count)
			}
		default:
			f.Count = 1
		}
		if f.Kind.isRate() {
			if f.Period < time.Millisecond {
				return fmt.Errorf("%s: period %s is shorter than 1ms", f.Kind, f.Period)
			}
			if f.Period > 30*24*time.Hour {
				return fmt.Errorf("%s: period %s is longer than 30 days", f.Kind, f.Period)
			}
		} else {
			f.Period = 0
		}
		switch {
		case f.Kind.isRate() && f.Kind.wide():
			f.width = 5 // period index, current (64 bits), previous (64 bits)
		case f.Kind.isRate():
			f.width = 3 // period index, current, previous
		case f.Kind.wide():
			f.width = 2
		default:
			f.width = 1
		}
		f.off = off
		off += f.width * f.Count
		for e := 0; e < f.Count; e++ {
			s.columns = append(s.columns, Column{Name: columnName(f.Kind, e), field: i, elem: e})
		}
	}
	for i := range s.Fields {
		f := &s.Fields[i]
		f.delta, f.remote, f.own = -1, -1, -1
		if s.Replicated && (f.Kind == ConnCur || f.Kind == ReqCur) {
			f.remote = off
			off += f.Count
		}
		if s.Replicated && f.Kind.summable() {
			f.delta = off
			w := 1
			if f.Kind.wide() {
				w = 2
			}
			off += w * f.Count
			f.own = off
			off += f.width * f.Count
		}
	}
	s.stride = off
	return nil
}

func columnName(k Kind, elem int) string {
	switch k {
	case GPC:
		return "gpc" + strconv.Itoa(elem)
	case GPT:
		return "gpt" + strconv.Itoa(elem)
	case GPCRate:
		return "gpc" + strconv.Itoa(elem) + "_rate"
	}
	return k.String()
}

// Columns lists every readable value of the schema in storage order.
func (s *Schema) Columns() []Column { return s.columns }

// Has reports whether the schema stores the kind.
func (s *Schema) Has(k Kind) bool { return k < numKinds && s.byKind[k] >= 0 }

// Words returns the number of 32-bit data words per entry.
func (s *Schema) Words() int { return s.stride }

// Column resolves a value name: conn_cnt, http_req_rate, gpc0, gpc1_rate,
// gpt0, server_id, ban, ... The error names what the table stores.
func (s *Schema) Column(name string) (Column, error) {
	for _, c := range s.columns {
		if c.Name == name {
			return c, nil
		}
	}
	known := make([]string, 0, len(s.columns))
	for _, c := range s.columns {
		known = append(known, c.Name)
	}
	return Column{}, fmt.Errorf("the table does not store %q (it stores: %s)", name, strings.Join(known, ", "))
}

// Compatible reports whether entries of a table with schema o can be kept by
// a table with schema s: same key type, key length, prefixes, replication
// and stored fields (kinds, counts and periods).
func (s *Schema) Compatible(o *Schema) bool {
	if s.Type != o.Type || s.KeyLen != o.KeyLen || s.IPv4Prefix != o.IPv4Prefix ||
		s.IPv6Prefix != o.IPv6Prefix || s.Replicated != o.Replicated || len(s.Fields) != len(o.Fields) {
		return false
	}
	for i := range s.Fields {
		a, b := s.Fields[i], o.Fields[i]
		if a.Kind != b.Kind || a.Count != b.Count || a.Period != b.Period {
			return false
		}
	}
	return true
}

// String renders the schema as a store clause, e.g.
// "type ip store http_req_rate(10s) gpc(2)".
func (s *Schema) String() string {
	var b strings.Builder
	b.WriteString("type ")
	b.WriteString(s.Type.String())
	if s.Type == KeyString || s.Type == KeyBinary {
		fmt.Fprintf(&b, " len %d", s.KeyLen)
	}
	if s.IPv4Prefix != 0 {
		fmt.Fprintf(&b, " ipv4_prefix %d", s.IPv4Prefix)
	}
	if s.IPv6Prefix != 0 {
		fmt.Fprintf(&b, " ipv6_prefix %d", s.IPv6Prefix)
	}
	if len(s.Fields) > 0 {
		b.WriteString(" store")
		for _, f := range s.StoreSpecs() {
			b.WriteByte(' ')
			b.WriteString(f)
		}
	}
	return b.String()
}

// StoreSpecs returns the fields as store keywords, e.g. "http_req_rate(10s)".
func (s *Schema) StoreSpecs() []string {
	out := make([]string, 0, len(s.Fields))
	for _, f := range s.Fields {
		switch {
		case f.Kind == GPCRate:
			out = append(out, fmt.Sprintf("gpc_rate(%d,%s)", f.Count, FormatDuration(f.Period)))
		case f.Kind == GPC || f.Kind == GPT:
			out = append(out, fmt.Sprintf("%s(%d)", f.Kind, f.Count))
		case f.Kind.isRate():
			out = append(out, fmt.Sprintf("%s(%s)", f.Kind, FormatDuration(f.Period)))
		default:
			out = append(out, f.Kind.String())
		}
	}
	return out
}

// ParseStore parses one store keyword: a plain data type (conn_cnt,
// req_cur, ban, ...), a rate with its period (http_req_rate(10s)), an array
// (gpc(2), gpt(1), gpc_rate(2,1m)) or HAProxy's legacy names (gpc0, gpc1,
// gpt0, gpc0_rate(10s), gpc1_rate(10s)), which declare arrays large enough
// to hold that element. Several keywords may be separated by commas.
// Periods are read by parsePeriod (the glue passes caddy.ParseDuration, so
// every duration of the suite is written one way) and must be positive.
func ParseStore(fields []Field, spec string, parsePeriod func(string) (time.Duration, error)) ([]Field, error) {
	for _, part := range splitStore(spec) {
		f, err := parseOneStore(part, parsePeriod)
		if err != nil {
			return nil, err
		}
		fields = mergeField(fields, f)
	}
	return fields, nil
}

// splitStore splits "a,b(1,2s),c" on the commas outside parentheses.
func splitStore(spec string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(spec); i++ {
		switch spec[i] {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, spec[start:i])
				start = i + 1
			}
		}
	}
	return append(out, spec[start:])
}

func mergeField(fields []Field, f Field) []Field {
	for i := range fields {
		if fields[i].Kind == f.Kind {
			if f.Count > fields[i].Count {
				fields[i].Count = f.Count
			}
			if f.Period != 0 {
				fields[i].Period = f.Period
			}
			return fields
		}
	}
	return append(fields, f)
}

func parseOneStore(spec string, parsePeriod func(string) (time.Duration, error)) (Field, error) {
	name, arg, hasArg := strings.Cut(strings.TrimSpace(spec), "(")
	if hasArg {
		if !strings.HasSuffix(arg, ")") {
			return Field{}, fmt.Errorf("store %q: missing closing parenthesis", spec)
		}
		arg = strings.TrimSuffix(arg, ")")
	}
	// HAProxy's legacy gpc0/gpc1/gpt0 and gpcN_rate names.
	if n, ok := legacyIndex(name, "gpc", ""); ok {
		if hasArg {
			return Field{}, fmt.Errorf("store %q: %s takes no argument", spec, name)
		}
		return Field{Kind: GPC, Count: n + 1}, nil
	}
	if n, ok := legacyIndex(name, "gpt", ""); ok {
		if hasArg {
			return Field{}, fmt.Errorf("store %q: %s takes no argument", spec, name)
		}
		return Field{Kind: GPT, Count: n + 1}, nil
	}
	if n, ok := legacyIndex(name, "gpc", "_rate"); ok {
		if !hasArg {
			return Field{}, fmt.Errorf("store %q: %s needs a period, e.g. %s(10s)", spec, name, name)
		}
		p, err := parsePositive(parsePeriod, arg)
		if err != nil {
			return Field{}, fmt.Errorf("store %q: %v", spec, err)
		}
		return Field{Kind: GPCRate, Count: n + 1, Period: p}, nil
	}
	kind := numKinds
	for i, n := range kindNames {
		if n == name {
			kind = Kind(i)
		}
	}
	if kind == numKinds {
		return Field{}, fmt.Errorf("store %q: unknown data type %q", spec, name)
	}
	f := Field{Kind: kind, Count: 1}
	switch {
	case kind == GPCRate:
		cnt, per, ok := strings.Cut(arg, ",")
		if !hasArg || !ok {
			return Field{}, fmt.Errorf("store %q: gpc_rate needs (count,period), e.g. gpc_rate(2,10s)", spec)
		}
		n, err := strconv.Atoi(strings.TrimSpace(cnt))
		if err != nil || n < 1 || n > 100 {
			return Field{}, fmt.Errorf("store %q: count %q is not a number in 1..100", spec, cnt)
		}
		p, err := parsePositive(parsePeriod, per)
		if err != nil {
			return Field{}, fmt.Errorf("store %q: %v", spec, err)
		}
		f.Count, f.Period = n, p
	case kind == GPC || kind == GPT:
		if !hasArg {
			return Field{}, fmt.Errorf("store %q: %s needs an element count, e.g. %s(2)", spec, name, name)
		}
		n, err := strconv.Atoi(strings.TrimSpace(arg))
		if err != nil || n < 1 || n > 100 {
			return Field{}, fmt.Errorf("store %q: count %q is not a number in 1..100", spec, arg)
		}
		f.Count = n
	case kind.isRate():
		if !hasArg {
			return Field{}, fmt.Errorf("store %q: %s needs a period, e.g. %s(10s)", spec, name, name)
		}
		p, err := parsePositive(parsePeriod, arg)
		if err != nil {
			return Field{}, fmt.Errorf("store %q: %v", spec, err)
		}
		f.Period = p
	case hasArg:
		return Field{}, fmt.Errorf("store %q: %s takes no argument", spec, name)
	}
	return f, nil
}

// legacyIndex parses prefix<N>suffix with N a small decimal.
func legacyIndex(name, prefix, suffix string) (int, bool) {
	if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, suffix) {
		return 0, false
	}
	digits := name[len(prefix) : len(name)-len(suffix)]
	if digits == "" || len(digits) > 2 {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// FormatDuration prints a duration in the shortest HAProxy unit that is
// exact (1d, 10m, 10s, 500ms).
func FormatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%(24*time.Hour) == 0:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	case d%time.Millisecond == 0:
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	case d%time.Microsecond == 0:
		return strconv.FormatInt(int64(d/time.Microsecond), 10) + "us"
	}
	return d.String()
}

// parsePositive reads a rate period.
func parsePositive(parse func(string) (time.Duration, error), text string) (time.Duration, error) {
	d, err := parse(strings.TrimSpace(text))
	if err != nil {
		return 0, fmt.Errorf("period %q: %v", text, err)
	}
	if d <= 0 {
		return 0, fmt.Errorf("period %q must be positive", text)
	}
	return d, nil
}
