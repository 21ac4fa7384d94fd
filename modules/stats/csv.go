package stats

import (
	"encoding/csv"
	"io"
	"strconv"
)

// csvColumns are the stable columns of GET /rampart/stats.csv, one row per
// object. Upstream rows fill section (upstream), kind, group, name (the
// address), state..latency_p99_ms; stick table rows fill group (the
// table), kind (its key type), current (used) and total (size); metric rows fill group (the
// metric), name (its labels) and value. Empty cells do not apply.
var csvColumns = []string{
	"section", "kind", "group", "name", "state", "healthy", "current", "total",
	"r1xx", "r2xx", "r3xx", "r4xx", "r5xx", "rerror", "latency_avg_ms", "latency_p99_ms", "value",
}

// writeCSV renders a snapshot as CSV.
func writeCSV(w io.Writer, s Snapshot) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(csvColumns)
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	for _, r := range s.Upstreams {
		row := []string{"upstream", r.Kind, r.Group, r.Address, r.State, strconv.FormatBool(r.Healthy),
			strconv.FormatInt(r.Current, 10), u(r.Requests), "", "", "", "", "", "", "", "", ""}
		if r.Responses != nil {
			for i, c := range []string{"1xx", "2xx", "3xx", "4xx", "5xx", "error"} {
				row[8+i] = u(r.Responses[c])
			}
			row[14], row[15] = f(r.LatencyAvgMs), f(r.LatencyP99Ms)
		}
		_ = cw.Write(row)
	}
	for _, t := range s.StickTables {
		_ = cw.Write([]string{"stick_table", t.Type, t.Name, "", "", "", strconv.Itoa(t.Used), strconv.Itoa(t.Size),
			"", "", "", "", "", "", "", "", ""})
	}
	for _, sec := range s.Sections {
		for _, r := range sec.Rows {
			_ = cw.Write([]string{sec.Name, "", r.Metric, r.Labels, "", "", "", "", "", "", "", "", "", "", "", "", f(r.Value)})
		}
	}
	cw.Flush()
	return cw.Error()
}
