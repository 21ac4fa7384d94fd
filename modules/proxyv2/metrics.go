package proxyv2

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Result is the outcome of receiving one connection, the label of
// rampart_proxy_headers_total.
type Result string

// The fixed set of results.
const (
	ResultOK         Result = "ok"          // a valid PROXY header
	ResultLocal      Result = "local"       // a valid LOCAL header (health check)
	ResultPlain      Result = "plain"       // untrusted source served without a header
	ResultUntrusted  Result = "untrusted"   // untrusted source rejected
	ResultUnexpected Result = "unexpected"  // untrusted source sent a header
	ResultMissing    Result = "missing"     // trusted source sent no header
	ResultMalformed  Result = "malformed"   // header breaks the specification
	ResultOversized  Result = "oversized"   // header longer than max_header
	ResultTruncated  Result = "truncated"   // connection closed inside the header
	ResultTimeout    Result = "timeout"     // header not complete within the timeout
	ResultBadCRC     Result = "bad_crc"     // CRC32C mismatch
	ResultMissingCRC Result = "missing_crc" // require_crc and no CRC32C TLV
	ResultVersion    Result = "version"     // version not in versions
	ResultEmpty      Result = "empty"       // closed before sending anything
	ResultError      Result = "error"       // a socket error while reading
)

var allResults = []Result{ResultOK, ResultLocal, ResultPlain, ResultUntrusted, ResultUnexpected, ResultMissing,
	ResultMalformed, ResultOversized, ResultTruncated, ResultTimeout, ResultBadCRC, ResultMissingCRC, ResultVersion,
	ResultEmpty, ResultError}

// headersTotal counts received connections by result; it lives as long as
// the process, so counts survive config reloads.
var headersTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: "rampart",
	Subsystem: "proxy",
	Name:      "headers_total",
	Help:      "Connections received by the PROXY protocol listener wrapper and layer4 handler, by result.",
}, []string{"result"})

// resultCounters holds each result's counter, resolved once.
var resultCounters = func() map[Result]prometheus.Counter {
	m := make(map[Result]prometheus.Counter, len(allResults))
	for _, r := range allResults {
		m[r] = headersTotal.WithLabelValues(string(r))
	}
	return m
}()

// count adds one connection to its result's counter.
func count(r Result) { resultCounters[r].Inc() }
