#!/usr/bin/env bash
# The cost of the proxy_v2 listener wrapper: HAProxy (mode tcp) forwards
# wrk's connections to one Caddy, plainly to a port without the wrapper (A),
# with send-proxy-v2 and a CRC32C to a port behind proxy_v2 (B), and the same
# header to a port behind Caddy's own proxy_protocol wrapper (C, which
# go-proxyproto serves). Alternating runs; the figures are the ratios B/A
# (the whole cost of the PROXY hop, HAProxy's side included) and B/C
# (Rampart against Caddy's built-in), with keep-alive and with a new
# connection (and so a new header) per request, in throughput and in the
# edge's CPU time per request (utime+stime of the Caddy process from /proc
# over each wrk run; all three ports are served by the same process).
#
#   integration/bench/proxyv2.sh [rounds] [seconds]
source "$(dirname "$0")/lib.sh"
need wrk wrk
need haproxy haproxy
need bc bc
need python3 python3
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-8}
# this run's own binary, so that benchmarks of other checkouts do not replace it
CADDY=${CADDY:-$BENCH_DIR/caddy}
build_caddy

# free_port: a TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PLAIN=$(free_port) PROXIED=$(free_port) BUILTIN=$(free_port)
HA_PLAIN=$(free_port) HA_PROXIED=$(free_port) HA_BUILTIN=$(free_port)

run_caddy edge "{
	admin off
	servers 127.0.0.1:$PROXIED {
		listener_wrappers {
			proxy_v2 {
				trust 127.0.0.1/32
				untrusted reject
			}
			tls
		}
	}
	servers 127.0.0.1:$BUILTIN {
		listener_wrappers {
			proxy_protocol {
				allow 127.0.0.1/32
			}
			tls
		}
	}
}
http://:$PLAIN {
	bind 127.0.0.1
	respond \"hello\"
}
http://:$PROXIED {
	bind 127.0.0.1
	respond \"hello\"
}
http://:$BUILTIN {
	bind 127.0.0.1
	respond \"hello\"
}"
run_haproxy "global
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend plain
  bind 127.0.0.1:$HA_PLAIN
  default_backend plain
frontend proxied
  bind 127.0.0.1:$HA_PROXIED
  default_backend proxied
frontend builtin
  bind 127.0.0.1:$HA_BUILTIN
  default_backend builtin
backend plain
  server caddy 127.0.0.1:$PLAIN
backend proxied
  server caddy 127.0.0.1:$PROXIED send-proxy-v2 proxy-v2-options crc32c
backend builtin
  server caddy 127.0.0.1:$BUILTIN send-proxy-v2 proxy-v2-options crc32c"
wait_port $PLAIN
wait_port $PROXIED
wait_port $HA_PLAIN
wait_port $HA_PROXIED
wait_port $BUILTIN
wait_port $HA_BUILTIN

EDGE_PID=${BENCH_PIDS[0]}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# cpu_ticks: utime+stime of the edge so far, in clock ticks.
cpu_ticks() {
	awk '{print $14 + $15}' "/proc/$EDGE_PID/stat"
}

# run_side URL [wrk args...]: one wrk run; prints "req/s requests cpu_ticks".
run_side() {
	local url=$1 before out
	shift
	before=$(cpu_ticks)
	out=$(wrk "$@" "$url")
	echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') $(echo "$out" | awk '/requests in/ {print $1}') $(($(cpu_ticks) - before))"
}

# ab_cpu ROUNDS URL_A URL_B [wrk args...]: alternating runs; prints each
# round, the throughput ratio B/A and the CPU per request of A and B and
# their ratio A/B (1.0 = B costs the edge no more CPU per request).
ab_cpu() {
	local rounds=$1 a=$2 b=$3
	shift 3
	local rps_a=0 rps_b=0 req_a=0 req_b=0 cpu_a=0 cpu_b=0 ra rb
	for i in $(seq 1 "$rounds"); do
		read -r -a ra <<<"$(run_side "$a" "$@")"
		read -r -a rb <<<"$(run_side "$b" "$@")"
		echo "  round $i: A ${ra[0]} req/s, B ${rb[0]} req/s"
		rps_a=$(echo "$rps_a + ${ra[0]}" | bc -l) rps_b=$(echo "$rps_b + ${rb[0]}" | bc -l)
		req_a=$((req_a + ra[1])) req_b=$((req_b + rb[1]))
		cpu_a=$((cpu_a + ra[2])) cpu_b=$((cpu_b + rb[2]))
	done
	local us_a us_b
	us_a=$(echo "scale=2; $cpu_a * $TICK_US / $req_a" | bc -l)
	us_b=$(echo "scale=2; $cpu_b * $TICK_US / $req_b" | bc -l)
	echo "  throughput B/A = $(echo "scale=4; $rps_b / $rps_a" | bc -l)"
	echo "  edge CPU per request: A $us_a us, B $us_b us, A/B = $(echo "scale=4; $us_a / $us_b" | bc -l)"
}

for mode in keep-alive close; do
	args=(-t2 -c32 -d"${SECONDS_PER_RUN}s")
	[ "$mode" = close ] && args+=(-H "Connection: close")
	echo "$mode: A = no PROXY header, B = proxy_v2"
	ab_cpu "$ROUNDS" http://127.0.0.1:$HA_PLAIN/ http://127.0.0.1:$HA_PROXIED/ "${args[@]}"
	echo "$mode: A = Caddy's proxy_protocol, B = proxy_v2"
	ab_cpu "$ROUNDS" http://127.0.0.1:$HA_BUILTIN/ http://127.0.0.1:$HA_PROXIED/ "${args[@]}"
done
