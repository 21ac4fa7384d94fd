#!/usr/bin/env bash
# CPU per request of a `shared` (async) stick table against the same table
# kept local, end to end, with wrk -c64 on loopback against a local origin
# (a third Caddy answering "hello").
#
# Two edges run the same site (track + stick matcher + reverse_proxy): edge
# A's table is local, edge B's is `shared` through a local redis-server
# (stick_cluster, sync 100ms). Runs alternate A B B A ... in one run of the
# script. Two key sets:
#   one key:    track {client_ip} (every request on the same entry)
#   10k keys:   track X-Client-Id, wrk picks one of 10,000 keys per request
#               (every sync pushes and pulls thousands of changed keys)
# The figure is each edge's CPU time per request from /proc (user + system,
# its sync loop included) and B/A; redis-server's CPU per request of B is
# printed apart (it is another process: the shared cost outside the edge).
#
#   integration/bench/cluster.sh [rounds] [seconds]
source "$(dirname "$0")/lib.sh"
need wrk wrk
need bc bc
need redis-server redis-server
need curl curl
ROUNDS=${1:-4}
SECONDS_PER_RUN=${2:-8}
build_caddy

redis-server --port 18500 --bind 127.0.0.1 --save "" --appendonly no --dir "$BENCH_DIR" >"$BENCH_DIR/redis.log" 2>&1 &
BENCH_PIDS+=($!)
REDIS_PID=$!
run_caddy origin "{
	admin off
}
http://:18501 {
	bind 127.0.0.1
	respond \"hello\"
}"

# edge NAME ADMIN PORT_ONE PORT_MANY CLUSTER SHARED: an edge with the two
# sites, its tables local or shared.
edge() {
	run_caddy "$1" "{
	admin 127.0.0.1:$2
	$5
	stick_table per_ip {
		type ip
		size 100k
		expire 10m
		store http_req_cnt http_req_rate(10s) req_cur gpc0 ban
		$6
	}
	stick_table per_client {
		type string len 32
		size 100k
		expire 10m
		store http_req_cnt http_req_rate(10s) req_cur gpc0 ban
		$6
	}
}
http://:$3 {
	bind 127.0.0.1
	track per_ip {client_ip}
	@hot stick per_ip http_req_rate gt 1000000000
	respond @hot 429
	reverse_proxy 127.0.0.1:18501
}
http://:$4 {
	bind 127.0.0.1
	track per_client {header.X-Client-Id}
	@hot stick per_client http_req_rate gt 1000000000
	respond @hot 429
	reverse_proxy 127.0.0.1:18501
}"
}
edge local 18598 18510 18511 "" ""
PID_A=${BENCH_PIDS[-1]}
edge shared 18599 18520 18521 "stick_cluster {
		redis redis://127.0.0.1:18500/0
		node bench-edge
		sync 100ms
	}" shared
PID_B=${BENCH_PIDS[-1]}
for p in 18500 18501 18510 18511 18520 18521 18598 18599; do wait_port "$p"; done

cat >"$BENCH_DIR/keys.lua" <<'LUA'
-- one of 10,000 client keys per request
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/", {["X-Client-Id"] = "client-" .. ((n * 7919) % 10000)})
end
LUA

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# run_side PID URL [wrk args...]: one wrk run; prints "req/s requests
# edge-ticks redis-ticks".
run_side() {
	local pid=$1 url=$2
	shift 2
	local c0 r0 out c1 r1
	c0=$(cpu "$pid") r0=$(cpu "$REDIS_PID")
	out=$(wrk -t2 -c64 -d"${SECONDS_PER_RUN}s" "$@" "$url")
	c1=$(cpu "$pid") r1=$(cpu "$REDIS_PID")
	grep -q 'Non-2xx\|Socket errors' <<<"$out" && { echo "wrk saw errors on $url:" >&2; echo "$out" >&2; exit 1; }
	echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '/requests in/ {print $1}' <<<"$out") $((c1 - c0)) $((r1 - r0))"
}

# compare LABEL PORT_A PORT_B [wrk args...]
compare() {
	local label=$1 a=$2 b=$3
	shift 3
	local req_a=0 req_b=0 cpu_a=0 cpu_b=0 cpu_r=0 ra na ca xa rb nb cb xb
	echo "$label (wrk -t2 -c64 -d${SECONDS_PER_RUN}s, ABBA order), A = local table, B = shared async table:"
	for i in $(seq 1 "$ROUNDS"); do
		if ((i % 2)); then
			read -r ra na ca xa < <(run_side "$PID_A" "http://127.0.0.1:$a/" "$@")
			read -r rb nb cb xb < <(run_side "$PID_B" "http://127.0.0.1:$b/" "$@")
		else
			read -r rb nb cb xb < <(run_side "$PID_B" "http://127.0.0.1:$b/" "$@")
			read -r ra na ca xa < <(run_side "$PID_A" "http://127.0.0.1:$a/" "$@")
		fi
		req_a=$((req_a + na)) req_b=$((req_b + nb)) cpu_a=$((cpu_a + ca)) cpu_b=$((cpu_b + cb)) cpu_r=$((cpu_r + xb))
		echo "  round $i: A $ra req/s $(echo "scale=2; $ca * 1000000 / $TICK / $na" | bc -l) us/req, B $rb req/s $(echo "scale=2; $cb * 1000000 / $TICK / $nb" | bc -l) us/req"
	done
	echo "  edge CPU per request: A $(echo "scale=2; $cpu_a * 1000000 / $TICK / $req_a" | bc -l) us, B $(echo "scale=2; $cpu_b * 1000000 / $TICK / $req_b" | bc -l) us, B/A $(echo "scale=4; ($cpu_b / $req_b) / ($cpu_a / $req_a)" | bc -l)"
	echo "  redis-server CPU per request of B: $(echo "scale=2; $cpu_r * 1000000 / $TICK / $req_b" | bc -l) us"
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
compare "1. one key (track {client_ip})" 18510 18520
compare "2. 10,000 keys (track X-Client-Id)" 18511 18521 -s "$BENCH_DIR/keys.lua"
echo "  edge B: per_ip $(cluster_sync_stats 18599 per_ip); per_client $(cluster_sync_stats 18599 per_client)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
