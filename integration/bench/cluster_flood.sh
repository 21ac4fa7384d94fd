#!/usr/bin/env bash
# Redis memory under a flood of distinct keys across three edges sharing a
# table (stick_cluster, sync 100ms), measured with INFO memory:
#
# 1. flood: one wrk per edge (-t1 -c16), every request a new X-Client-Id,
#    until the edges have served TARGET requests (default 1,000,000: as
#    many distinct keys). Printed: the request rate, the time until Redis
#    holds every key (sync throughput), the sync rounds' mean duration,
#    DBSIZE and used_memory − baseline, divided by the keys.
# 2. a node id that disappears: edge 3 is killed after the flood.
# 3. expiry: the table's expire is EXPIRE seconds (default 120); the script
#    waits for it and checks that Redis is back to its baseline: no entry
#    key left, edge 3 gone from rampart:edges and from every hash (no field
#    with its id), used_memory within 1 MB of the baseline.
#
#   integration/bench/cluster_flood.sh [target keys] [expire seconds] [Redis timeout]
source "$(dirname "$0")/lib.sh"
need wrk wrk
need bc bc
need curl curl
need redis-server redis-server
need redis-cli redis-tools
TARGET=${1:-1000000}
EXPIRE=${2:-120}
TIMEOUT=${3:-50ms}
build_caddy

redis-server --port 18600 --bind 127.0.0.1 --save "" --appendonly no --dir "$BENCH_DIR" >"$BENCH_DIR/redis.log" 2>&1 &
BENCH_PIDS+=($!)
rcli() { redis-cli -p 18600 "$@"; }
used_memory() { rcli INFO memory | awk -F: '/^used_memory:/ {print $2+0}'; }
EDGE_PIDS=()
for i in 1 2 3; do
	run_caddy "edge$i" "{
	admin 127.0.0.1:1869$i
	stick_cluster {
		redis redis://127.0.0.1:18600/0
		node flood-edge-$i
		sync 100ms
		timeout $TIMEOUT
	}
	stick_table per_client {
		type string len 32
		size 400k
		expire ${EXPIRE}s
		store http_req_cnt http_req_rate(10s) req_cur gpc0 ban
		shared
	}
}
http://:1861$i {
	bind 127.0.0.1
	track per_client {header.X-Client-Id}
	respond \"ok\"
}"
	EDGE_PIDS+=("${BENCH_PIDS[-1]}")
done
for p in 18600 18611 18612 18613 18691 18692 18693; do wait_port "$p"; done
sleep 1
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
BASE_MEM=$(used_memory)
BASE_KEYS=$(rcli DBSIZE)
echo "baseline: used_memory $BASE_MEM B, $BASE_KEYS keys"

cat >"$BENCH_DIR/flood.lua" <<'LUA'
-- a new key per request: <prefix>-<n>
local prefix, n = "x", 0
init = function(args) prefix = args[1] end
request = function()
  n = n + 1
  return wrk.format("GET", "/", {["X-Client-Id"] = prefix .. "-" .. n})
end
LUA


sent=0
run=0
start=$(date +%s.%N)
while ((sent < TARGET)); do
	run=$((run + 1))
	pids=()
	for i in 1 2 3; do
		wrk -t1 -c16 -d10s -s "$BENCH_DIR/flood.lua" "http://127.0.0.1:1861$i/" -- "e$i-r$run" >"$BENCH_DIR/wrk$i.out" &
		pids+=($!)
	done
	wait "${pids[@]}"
	for i in 1 2 3; do
		grep -q 'Non-2xx\|Socket errors' "$BENCH_DIR/wrk$i.out" && { echo "errors on edge $i:"; cat "$BENCH_DIR/wrk$i.out"; exit 1; }
		sent=$((sent + $(awk '/requests in/ {print $1}' "$BENCH_DIR/wrk$i.out")))
	done
	echo "  after $(echo "$(date +%s.%N) - $start" | bc | cut -d. -f1) s: $sent distinct keys sent, Redis holds $(rcli DBSIZE) keys"
done
flooded=$(date +%s.%N)
echo "1. flood: $sent distinct keys over 3 edges in $(echo "$flooded - $start" | bc | cut -d. -f1) s ($(echo "$sent / ($flooded - $start)" | bc) req/s), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for i in 1 2 3; do echo "  edge $i: $(cluster_sync_stats "1869$i" per_client)"; done

# Redis holds every key when DBSIZE stops growing (entries plus their
# rate windows, which expire after 2 periods + 2 syncs + 1 s).
entries() { rcli --scan --pattern 'rampart:per_client:{*}' | grep -vc ':w' || true; }
prev=-1
for _ in $(seq 1 600); do
	n=$(entries)
	[ "$n" -ge "$sent" ] || [ "$n" = "$prev" ] && break
	prev=$n
	sleep 2
done
drained=$(date +%s.%N)
for i in 1 2 3; do echo "  edge $i: $(cluster_sync_stats "1869$i" per_client)"; done
MEM=$(used_memory)
KEYS=$(rcli DBSIZE)
echo "  Redis holds $n entry keys ($KEYS keys with rate windows) $(echo "$drained - $flooded" | bc | cut -d. -f1) s after the flood ended: sync throughput $(echo "$n / ($drained - $start)" | bc) keys/s over 3 edges"
echo "  used_memory $MEM B: +$((MEM - BASE_MEM)) B, $(echo "($MEM - $BASE_MEM) / $n" | bc) B per key (entry hash, its rate window hash and their share of Redis's dict)"
sleep 25
MEM=$(used_memory)
echo "  after the rate windows expired (25 s): $(rcli DBSIZE) keys, used_memory +$((MEM - BASE_MEM)) B, $(echo "($MEM - $BASE_MEM) / $n" | bc) B per key"
echo "  edges' tables: $(for i in 1 2 3; do curl -s "http://127.0.0.1:1869$i/metrics" | awk '/^rampart_stick_entries\{table="per_client"\}/ {printf "%d ", $2}'; done)entries"

kill "${EDGE_PIDS[2]}"
echo "2. edge 3 killed; rampart:edges: $(sleep 1; rcli ZRANGE rampart:edges 0 -1 | tr '\n' ' ')"

echo "3. waiting for the table's expire ($EXPIRE s after the flood's last keys)..."
left=$(echo "$EXPIRE - ($(date +%s.%N) - $flooded) + 5" | bc | cut -d. -f1)
((left > 0)) && sleep "$left"
for _ in $(seq 1 60); do
	[ "$(entries)" = 0 ] && break
	sleep 2
done
MEM=$(used_memory)
dead_fields=$(rcli --scan --pattern 'rampart:*' | while read -r k; do [ "$(rcli TYPE "$k")" = hash ] && rcli HKEYS "$k"; done | grep -c 'flood-edge-3' || true)
echo "  $(echo "$(date +%s.%N) - $flooded" | bc | cut -d. -f1) s after the flood: $(entries) entry keys, $(rcli DBSIZE) keys ($(rcli --scan | tr '\n' ' ')), used_memory +$((MEM - BASE_MEM)) B over the baseline"
echo "  rampart:edges: $(rcli ZRANGE rampart:edges 0 -1 | tr '\n' ' '); hash fields naming flood-edge-3: $dead_fields"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$(entries)" = 0 ] && ((MEM - BASE_MEM < 1048576)) && [ "$dead_fields" = 0 ] && ! rcli ZRANGE rampart:edges 0 -1 | grep -q flood-edge-3 || { echo "Redis did not return to its baseline"; exit 1; }
echo "Redis is back to its baseline"
