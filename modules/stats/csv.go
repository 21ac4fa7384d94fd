package stats

import (
	"encoding/csv"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"time"
)

// csvColumns are the stable columns of GET /rampart/stats.csv, one row per
// object; new columns are only ever added at the end. Upstream rows fill
// section (upstream), kind, group, name (the address), state..latency_p99_ms,
// keep_sticky, and for passthrough routes with health checks last_check,
// last_check_ok, fails (consecutive) and fails_total; stick table rows fill
// group (the table), kind (its key type), current (used) and total (size);
// stick_cluster rows (shared tables) fill kind (the mode), group (the
// table), name (the edges, space separated), state (connected or
// disconnected), total (syncs), fails_total (failed syncs) and last_check
// (the last successful sync); metric rows fill group (the metric), name
// (its labels) and value. Empty cells do not apply.
var csvColumns = []string{
	"section", "kind", "group", "name", "state", "healthy", "current", "total",
	"r1xx", "r2xx", "r3xx", "r4xx", "r5xx", "rerror", "latency_avg_ms", "latency_p99_ms", "value",
	"keep_sticky", "last_check", "last_check_ok", "fails", "fails_total",
}

// csvRow is one CSV row being filled, cell by column name.
type csvRow []string

// csvIndex is each column's index.
var csvIndex = func() map[string]int {
	m := make(map[string]int, len(csvColumns))
	for i, c := range csvColumns {
		m[c] = i
	}
	return m
}()

// set fills cells: column name, value, column name, value...
func (r csvRow) set(pairs ...string) csvRow {
	for i := 0; i+1 < len(pairs); i += 2 {
		r[csvIndex[pairs[i]]] = pairs[i+1]
	}
	return r
}

// writeCSV renders a snapshot as CSV.
func writeCSV(w io.Writer, s Snapshot) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(csvColumns)
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	row := func(pairs ...string) csvRow { return make(csvRow, len(csvColumns)).set(pairs...) }
	for _, r := range s.Upstreams {
		c := row("section", "upstream", "kind", r.Kind, "group", r.Group, "name", r.Address, "state", r.State,
			"healthy", strconv.FormatBool(r.Healthy), "current", strconv.FormatInt(r.Current, 10), "total", u(r.Requests),
			"keep_sticky", strconv.FormatBool(r.KeepSticky))
		if r.Responses != nil {
			c.set("r1xx", u(r.Responses["1xx"]), "r2xx", u(r.Responses["2xx"]), "r3xx", u(r.Responses["3xx"]),
				"r4xx", u(r.Responses["4xx"]), "r5xx", u(r.Responses["5xx"]), "rerror", u(r.Responses["error"]),
				"latency_avg_ms", f(r.LatencyAvgMs), "latency_p99_ms", f(r.LatencyP99Ms))
		}
		if ch := r.Checks; ch != nil {
			c.set("fails", strconv.FormatInt(ch.Fails, 10), "fails_total", u(ch.FailsTotal))
			if ch.LastAt != nil {
				c.set("last_check", ch.LastAt.Format(time.RFC3339Nano), "last_check_ok", strconv.FormatBool(ch.LastOK))
			}
		}
		_ = cw.Write(c)
	}
	for _, t := range s.StickTables {
		_ = cw.Write(row("section", "stick_table", "kind", t.Type, "group", t.Name, "current", strconv.Itoa(t.Used), "total", strconv.Itoa(t.Size)))
	}
	for _, t := range s.StickTables {
		var cl struct { // the fields of the stick API's cluster object a row shows
			Mode      string
			LastSync  string `json:"last_sync"`
			Connected bool
			Edges     []string
			Syncs     uint64
			Errors    uint64
		}
		if t.Cluster == nil || json.Unmarshal(t.Cluster, &cl) != nil {
			continue
		}
		state := "disconnected"
		if cl.Connected {
			state = "connected"
		}
		_ = cw.Write(row("section", "stick_cluster", "kind", cl.Mode, "group", t.Name, "name", strings.Join(cl.Edges, " "),
			"state", state, "total", u(cl.Syncs), "fails_total", u(cl.Errors), "last_check", cl.LastSync))
	}
	for _, sec := range s.Sections {
		for _, r := range sec.Rows {
			_ = cw.Write(row("section", sec.Name, "group", r.Metric, "name", r.Labels, "value", f(r.Value)))
		}
	}
	cw.Flush()
	return cw.Error()
}
