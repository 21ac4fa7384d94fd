package stick

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Layers for rampart_stick_rejections_total.
const (
	layerHTTP     = "http"
	layerListener = "listener"
	layerL4       = "layer4"
)

// rejections counts requests and connections refused because of a table:
// denied by the listener wrapper or the layer4 handler, or tarpitted. Only
// table and layer labels: cardinality stays bounded.
var rejections = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: "rampart",
	Subsystem: "stick",
	Name:      "rejections_total",
	Help:      "Requests and connections rejected or tarpitted because of a stick table, by table and layer (http, listener, layer4).",
}, []string{"table", "layer"})

// tableCollector reports the tables of one config's app; it is registered
// into that config's metrics registry.
type tableCollector struct{ app *App }

var (
	entriesDesc = prometheus.NewDesc("rampart_stick_entries", "Entries in a stick table.", []string{"table"}, nil)
	capDesc     = prometheus.NewDesc("rampart_stick_capacity", "Maximum entries of a stick table (its size).", []string{"table"}, nil)
	evictDesc   = prometheus.NewDesc("rampart_stick_evictions_total", "Entries evicted from a full stick table to make room.", []string{"table"}, nil)
)

// Describe implements prometheus.Collector.
func (tableCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- entriesDesc
	ch <- capDesc
	ch <- evictDesc
}

// Collect implements prometheus.Collector.
func (c tableCollector) Collect(ch chan<- prometheus.Metric) {
	for name, lt := range c.app.tables {
		ch <- prometheus.MustNewConstMetric(entriesDesc, prometheus.GaugeValue, float64(lt.tbl.Len()), name)
		ch <- prometheus.MustNewConstMetric(capDesc, prometheus.GaugeValue, float64(lt.tbl.Size()), name)
		ch <- prometheus.MustNewConstMetric(evictDesc, prometheus.CounterValue, float64(lt.tbl.Evictions()), name)
	}
}
