#!/usr/bin/env bash
# What an idle edge costs: plain Caddy (A) and the same site with a
# stick table tracking every request (B) run side by side, both idle after
# one request, for SECONDS; the figure is each process's CPU time over
# that wait (utime+stime from /proc, in ms) and its CPU share of one core.
# The stick tables' coarse clock ticks every millisecond while tables are
# read and parks when they are not; before it parked, B used 2.7 % of a
# core doing nothing.
#
#   integration/bench/idle.sh [seconds]
source "$(dirname "$0")/lib.sh"
need curl curl
WAIT=${1:-10}
build_caddy

run_caddy plain "{
	admin off
}
http://:18501 {
	bind 127.0.0.1
	respond \"hello\"
}"
run_caddy tables "{
	admin off
	stick_table per_ip {
		type ip
		size 100k
		expire 10m
		store http_req_rate(10s) conn_cur gpc0
	}
}
http://:18502 {
	bind 127.0.0.1
	track per_ip {client_ip}
	@hot stick per_ip http_req_rate gt 100
	respond @hot 429
	respond \"hello\"
}"
wait_port 18501
wait_port 18502
plain=${BENCH_PIDS[0]} tables=${BENCH_PIDS[1]}
curl -fsS -o /dev/null http://127.0.0.1:18501/
curl -fsS -o /dev/null http://127.0.0.1:18502/
sleep 2 # start-up work (certificate maintenance, first GC) settles
hz=$(getconf CLK_TCK)
a0=$(cpu_ticks "$plain") b0=$(cpu_ticks "$tables")
sleep "$WAIT"
a1=$(cpu_ticks "$plain") b1=$(cpu_ticks "$tables")
ms() { echo "($1) * 1000 / $hz" | bc; }
share() { echo "scale=2; ($1) * 100 / $hz / $WAIT" | bc -l; }
echo "idle for ${WAIT}s (load $(cut -d' ' -f1 /proc/loadavg)):"
echo "  A plain Caddy:          $(ms "$a1 - $a0") ms CPU, $(share "$a1 - $a0") % of a core"
echo "  B with a stick table:   $(ms "$b1 - $b0") ms CPU, $(share "$b1 - $b0") % of a core"
