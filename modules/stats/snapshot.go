package stats

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rampart-edge/caddy-rampart/modules/stats/upstate"
)

// Snapshot is the document GET /rampart/stats.json returns; the page and
// the CSV are rendered from it.
type Snapshot struct {
	// Time the snapshot was taken (RFC 3339).
	Time time.Time `json:"time"`
	// Loaded is when the running config was loaded.
	Loaded time.Time `json:"loaded"`
	// Admin is true where the page may change states (admin API, or the
	// rampart_stats handler with `admin`).
	Admin bool `json:"admin"`
	// Upstreams of every reverse_proxy handler and passthrough route.
	Upstreams []UpstreamRow `json:"upstreams"`
	// StickTables of the stick_tables app, when it is configured.
	StickTables []StickTable `json:"stick_tables,omitempty"`
	// Sections are the other modules' figures, from their Prometheus
	// series: listeners (PROXY headers), stick, hide_origin, origin_lock,
	// passthrough, forward_proxy, cache; each only when configured.
	Sections []Section `json:"sections"`
}

// UpstreamRow is one upstream of one handler or route.
type UpstreamRow struct {
	// Kind is reverse_proxy or passthrough.
	Kind string `json:"kind"`
	// Group names the handler ("<server> #<n>") or the passthrough route.
	Group string `json:"group"`
	// Address is the dial address, the <upstream> of PUT /rampart/upstreams/<upstream>.
	Address string `json:"address"`
	// State is ready, drain or maint.
	State string `json:"state"`
	// StateBy says who set the state last (remote address and user).
	StateBy string `json:"state_by,omitempty"`
	// StateAt is when.
	StateAt *time.Time `json:"state_at,omitempty"`
	// KeepSticky marks a drain that still sends the upstream the requests
	// its handler's lb_policy binds to it (cookie, stick).
	KeepSticky bool `json:"keep_sticky,omitempty"`
	// Healthy is the proxy's health verdict (false in maint).
	Healthy bool `json:"healthy"`
	// Current is the requests or connections in flight.
	Current int64 `json:"current"`
	// Requests sent to the upstream (reverse_proxy: attempts).
	Requests uint64 `json:"requests"`
	// Responses by status class (1xx..5xx, error), reverse_proxy only.
	Responses map[string]uint64 `json:"responses,omitempty"`
	// LatencyAvgMs is the mean time to response headers.
	LatencyAvgMs float64 `json:"latency_avg_ms"`
	// LatencyP99Ms estimates the 99th percentile from the histogram
	// buckets (the bucket's upper bound).
	LatencyP99Ms float64 `json:"latency_p99_ms"`
	// Checks are the route's own active health checks of the upstream
	// (passthrough routes with health_interval).
	Checks *ChecksRow `json:"checks,omitempty"`
}

// ChecksRow is what a route's active health checks know of an upstream.
type ChecksRow struct {
	// LastAt is when the last check ended (absent before the first).
	LastAt *time.Time `json:"last_at,omitempty"`
	// LastOK is the last check's result.
	LastOK bool `json:"last_ok"`
	// Fails counts the consecutive failed checks up to now.
	Fails int64 `json:"fails"`
	// FailsTotal counts every failed check.
	FailsTotal uint64 `json:"fails_total"`
}

// StickTable is one stick table with its top keys.
type StickTable struct {
	// Name of the table.
	Name string `json:"name"`
	// Type of its keys.
	Type string `json:"type"`
	// Size is the maximum number of entries.
	Size int `json:"size"`
	// Used is the number of entries now.
	Used int `json:"used"`
	// Data types stored.
	Data []string `json:"data"`
	// SortedBy is the data type the top keys are sorted by.
	SortedBy string `json:"sorted_by,omitempty"`
	// Top keys, highest first, with their values.
	Top []json.RawMessage `json:"top"`
	// Cluster is the sync state of a table shared through Redis (absent
	// for a local table), as the stick-table API reports it: mode,
	// connected, last_sync, edges, syncs, errors, round_trips.
	Cluster json.RawMessage `json:"cluster,omitempty"`
}

// Section is one module's figures.
type Section struct {
	// Name: listeners, stick, hide_origin, origin_lock, passthrough,
	// forward_proxy, cache, or the metric's subsystem.
	Name string `json:"name"`
	// Rows, one per series.
	Rows []MetricRow `json:"rows"`
}

// MetricRow is one Prometheus series.
type MetricRow struct {
	// Metric name.
	Metric string `json:"metric"`
	// Labels as name=value pairs, comma separated and sorted.
	Labels string `json:"labels"`
	// Value of a counter or gauge; a histogram's count.
	Value float64 `json:"value"`
}

// sectionOf maps a metric to its section, by prefix.
var sectionPrefixes = []struct{ prefix, section string }{
	{"rampart_proxy_", "listeners"},
	{"rampart_stick_", "stick"},
	{"rampart_hide_origin_", "hide_origin"},
	{"rampart_origin_lock_", "origin_lock"},
	{"rampart_passthrough_", "passthrough"},
	{"rampart_forward_proxy_", "forward_proxy"},
	{"rampart_cache_", "cache"},
}

func sectionOf(metric string) string {
	if strings.HasPrefix(metric, "rampart_upstream_") || !strings.HasPrefix(metric, "rampart_") {
		return ""
	}
	for _, p := range sectionPrefixes {
		if strings.HasPrefix(metric, p.prefix) {
			return p.section
		}
	}
	name, _, _ := strings.Cut(strings.TrimPrefix(metric, "rampart_"), "_")
	return name
}

// source is what a snapshot is taken from: one config's metrics registry
// and stick-table API.
type source struct {
	registry *prometheus.Registry
	stick    caddy.AdminHandler // admin.api.stick_tables of the config, or nil
	loaded   time.Time
}

// take builds the snapshot.
func (s *source) take(admin bool) Snapshot {
	snap := Snapshot{Time: time.Now().UTC(), Loaded: s.loaded, Admin: admin, Upstreams: upstreamRows(), Sections: []Section{}}
	if s.registry != nil {
		if families, err := s.registry.Gather(); err == nil {
			snap.Sections = sections(families)
		}
	}
	snap.StickTables = s.stickTables()
	return snap
}

// upstreamRows lists the registry's members with their state and figures,
// one row per kind, group and address.
func upstreamRows() []UpstreamRow {
	flights.settle(false) // the requests that have ended are counted
	rows := []UpstreamRow{}
	seen := map[[3]string]bool{}
	for _, m := range upstate.Members() {
		k := [3]string{m.Kind, m.Group, m.Addr}
		if seen[k] {
			continue
		}
		seen[k] = true
		info := upstate.For(m.Addr).Info()
		row := UpstreamRow{Kind: m.Kind, Group: m.Group, Address: m.Addr, State: info.State.String(),
			StateBy: info.By, KeepSticky: info.KeepSticky, Healthy: m.Healthy(), Current: m.Active()}
		if !info.At.IsZero() {
			at := info.At.UTC()
			row.StateAt = &at
		}
		if m.Checks != nil {
			c := m.Checks()
			row.Checks = &ChecksRow{LastOK: c.LastOK, Fails: c.Fails, FailsTotal: c.FailsTotal}
			if !c.LastAt.IsZero() {
				at := c.LastAt.UTC()
				row.Checks.LastAt = &at
			}
		}
		if m.Kind == "reverse_proxy" {
			fillFigures(&row)
		}
		rows = append(rows, row)
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].Kind != rows[j].Kind {
			return rows[i].Kind > rows[j].Kind // reverse_proxy first
		}
		return rows[i].Group < rows[j].Group
	})
	return rows
}

// fillFigures reads an upstream's series.
func fillFigures(row *UpstreamRow) {
	f := figuresFor(row.Address)
	var m dto.Metric
	if f.requests.Write(&m) == nil {
		row.Requests = uint64(m.GetCounter().GetValue())
	}
	row.Responses = map[string]uint64{}
	for i, c := range classes {
		m.Reset()
		if f.responses[i].Write(&m) == nil {
			row.Responses[c] = uint64(m.GetCounter().GetValue())
		}
	}
	m.Reset()
	if h, ok := f.latency.(prometheus.Metric); ok && h.Write(&m) == nil {
		hist := m.GetHistogram()
		if n := hist.GetSampleCount(); n > 0 {
			row.LatencyAvgMs = round(hist.GetSampleSum() / float64(n) * 1e3)
			row.LatencyP99Ms = round(quantile(hist, 0.99) * 1e3)
		}
	}
}

// quantile returns the upper bound of the bucket holding the q quantile
// (the largest bucket's bound past the last one).
func quantile(h *dto.Histogram, q float64) float64 {
	want := uint64(math.Ceil(q * float64(h.GetSampleCount())))
	last := 0.0
	for _, b := range h.GetBucket() {
		last = b.GetUpperBound()
		if b.GetCumulativeCount() >= want {
			return last
		}
	}
	return last
}

func round(v float64) float64 { return math.Round(v*1000) / 1000 }

// sections turns the rampart_* families (but the upstream ones, which the
// upstream rows show) into sections, in a fixed order.
func sections(families []*dto.MetricFamily) []Section {
	bySection := map[string]*Section{}
	var order []string
	for _, fam := range families {
		name := sectionOf(fam.GetName())
		if name == "" {
			continue
		}
		sec, ok := bySection[name]
		if !ok {
			sec = &Section{Name: name}
			bySection[name] = sec
			order = append(order, name)
		}
		for _, m := range fam.GetMetric() {
			sec.Rows = append(sec.Rows, MetricRow{Metric: fam.GetName(), Labels: labels(m), Value: value(m)})
		}
	}
	rank := func(name string) int {
		for i, p := range sectionPrefixes {
			if p.section == name {
				return i
			}
		}
		return len(sectionPrefixes)
	}
	sort.SliceStable(order, func(i, j int) bool {
		if ri, rj := rank(order[i]), rank(order[j]); ri != rj {
			return ri < rj
		}
		return order[i] < order[j]
	})
	out := make([]Section, 0, len(order))
	for _, n := range order {
		out = append(out, *bySection[n])
	}
	return out
}

func labels(m *dto.Metric) string {
	parts := make([]string, 0, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

// topKeys is how many keys a stick table shows.
const topKeys = 10

// stickTables asks the config's stick-table admin API (by module name: the
// glue packages do not import each other) for the tables and their top
// keys, sorted by the first stored data type that is not a ban.
func (s *source) stickTables() []StickTable {
	if s.stick == nil {
		return nil
	}
	var tables []StickTable
	if !s.stickGet("/stick-tables/", &tables) {
		return nil
	}
	for i := range tables {
		t := &tables[i]
		for _, d := range t.Data {
			if d != "ban" {
				t.SortedBy = d
				break
			}
		}
		q := url.Values{"limit": {strconv.Itoa(topKeys)}}
		if t.SortedBy != "" {
			q.Set("sort", t.SortedBy)
			q.Set("order", "desc")
		}
		t.Top = []json.RawMessage{}
		s.stickGet("/stick-tables/"+url.PathEscape(t.Name)+"?"+q.Encode(), &t.Top)
	}
	return tables
}

// stickGet calls the stick-table API in process and decodes its answer.
func (s *source) stickGet(target string, into any) bool {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	if err := s.stick.ServeHTTP(rec, req); err != nil || rec.Code != http.StatusOK {
		return false
	}
	return json.Unmarshal(rec.Body.Bytes(), into) == nil
}
