#!/usr/bin/env bash
# forward_proxy figures, from the Go benchmarks in integration/forwardproxy:
#  - throughput: a 1 GiB download from a loopback origin directly (A),
#    through a bare relay (R: io.Copy both ways, spliced, no HTTP: what any
#    user-space proxy costs on this machine), through an HTTP/1.1 CONNECT
#    tunnel (B), through an HTTP/2 CONNECT stream of the HTTPS proxy (C),
#    and through HAProxy 2.6 in mode tcp with its default buffers (H) and
#    with option splice-auto (S), the anchors of what a mature user-space
#    relay achieves on this machine, and the CONNECT tunnel of a Caddy
#    process of its own (P, cmd/caddy, as HAProxy is: B shares the test
#    process with the client and the origin); rounds alternate A, R, H, S,
#    B, P, C; the figures are ratios of the summed MB/s (the issue's
#    target: B/A >= 0.90);
#  - new tunnels per second: connection + CONNECT + one echo round trip,
#    against connection + round trip directly.
#
#   integration/bench/forwardproxy.sh [rounds] [bytes]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
BYTES=${2:-$((1 << 30))}
PKG=./integration/forwardproxy/
source integration/bench/lib.sh
need haproxy haproxy
build_caddy
export RAMPART_BENCH_CADDY=$CADDY
go test -c -o /tmp/rampart-forwardproxy.test "$PKG"
results=$BENCH_DIR/results
for round in $(seq "$ROUNDS"); do
	(cd integration/forwardproxy && RAMPART_BENCH_BYTES=$BYTES /tmp/rampart-forwardproxy.test \
		-test.run '^$' -test.bench 'BenchmarkTunnelThroughput' -test.benchtime 1x) | grep '^Benchmark' | tee -a "$results"
done
for round in $(seq "$ROUNDS"); do
	(cd integration/forwardproxy && /tmp/rampart-forwardproxy.test \
		-test.run '^$' -test.bench 'BenchmarkNewTunnels' -test.benchtime 2000x) | grep '^Benchmark' | tee -a "$results"
done
awk '
/TunnelThroughput\/direct/     { a += $(NF-1) }
/TunnelThroughput\/bare_relay/ { r += $(NF-1) }
/TunnelThroughput\/connect_h1-/ { b += $(NF-1) }
/TunnelThroughput\/connect_h1_process/ { p += $(NF-1) }
/TunnelThroughput\/connect_h2/ { c += $(NF-1) }
/TunnelThroughput\/haproxy_tcp/ { h += $(NF-1) }
/TunnelThroughput\/haproxy_splice/ { s += $(NF-1) }
/NewTunnels\/direct/     { for (i = 1; i < NF; i++) if ($(i+1) == "conns/s")   d += $i }
/NewTunnels\/connect_h1/ { for (i = 1; i < NF; i++) if ($(i+1) == "tunnels/s") n += $i; k++ }
END {
	printf "throughput HTTP/1.1 CONNECT / direct: %.2f\n", b / a
	printf "throughput bare relay / direct:       %.2f\n", r / a
	printf "throughput HTTP/1.1 CONNECT / bare relay: %.2f\n", b / r
	printf "throughput HTTP/2 CONNECT / direct:   %.2f\n", c / a
	printf "throughput HTTP/1.1 CONNECT, Caddy process of its own / direct: %.2f\n", p / a
	printf "throughput HTTP/1.1 CONNECT, own process / HAProxy tcp: %.2f, / HAProxy splice: %.2f\n", p / h, p / s
	printf "throughput HAProxy tcp / direct: %.2f, HAProxy splice / direct: %.2f\n", h / a, s / a
	printf "throughput HTTP/1.1 CONNECT / HAProxy tcp: %.2f, / HAProxy splice: %.2f\n", b / h, b / s
	printf "new tunnels per second: %.0f (direct connections: %.0f, ratio %.2f)\n", n / k, d / k, n / d
}' "$results"
