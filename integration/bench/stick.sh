#!/usr/bin/env bash
# The cost of stick tables end to end, with wrk on loopback against a local
# origin (a second Caddy answering "hello"):
#
# 1. track + stick matcher vs plain reverse_proxy: A is a site that only
#    proxies, B tracks {client_ip} in a 1m-entry table and evaluates
#    `@hot stick per_ip http_req_rate gt ...` (never true) before proxying.
#    Alternating runs (ABBA); the figures are the median of the per-round
#    throughput ratios B/A (target ≥ 0.95) and the edge's CPU time per
#    request on each side (from /proc, less sensitive to the machine's noise).
# 2. legitimate clients under a key flood: while a flood of distinct keys
#    (a random X-Client-Id per request) hits the site, a legitimate client
#    with a fixed key measures its throughput. A: the flood hits a plain
#    proxy site; B: the flood hits a site tracking X-Client-Id in a
#    100k-entry string table (every flood request creates an entry and
#    evicts one). The figure is legit B/A (target ≥ 0.90); the table's entry
#    count and the edge's RSS are printed after the flood.
#
#   integration/bench/stick.sh [rounds] [seconds]
source "$(dirname "$0")/lib.sh"
need wrk wrk
need bc bc
need curl curl
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-8}
build_caddy

run_caddy origin "{
	admin off
}
http://:18300 {
	bind 127.0.0.1
	respond \"hello\"
}"
run_caddy edge "{
	admin 127.0.0.1:18399
	stick_table per_ip {
		type ip
		size 1m
		expire 10m
		store http_req_rate(10s) conn_cur gpc0
	}
	stick_table per_client {
		type string
		size 100k
		expire 10m
		store http_req_rate(10s) gpc0
	}
}
http://:18301 {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:18300
}
http://:18302 {
	bind 127.0.0.1
	track per_ip {client_ip}
	@hot stick per_ip http_req_rate gt 1000000000
	respond @hot 429
	reverse_proxy 127.0.0.1:18300
}
http://:18303 {
	bind 127.0.0.1
	track per_client {http.request.header.X-Client-Id}
	@hot stick per_client http_req_rate gt 1000000000
	respond @hot 429
	reverse_proxy 127.0.0.1:18300
}"
EDGE_PID=${BENCH_PIDS[-1]}
for p in 18300 18301 18302 18303 18399; do wait_port "$p"; done

# edge_cpu: the edge's user+system CPU time so far, in clock ticks.
edge_cpu() { awk '{print $14 + $15}' "/proc/$EDGE_PID/stat"; }
TICK=$(getconf CLK_TCK)

# run_side URL: one wrk run; prints "req/s requests cpu-ticks".
run_side() {
	local c0 out c1
	c0=$(edge_cpu)
	out=$(wrk -t2 -c32 -d"${SECONDS_PER_RUN}s" "$1")
	c1=$(edge_cpu)
	echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '/requests in/ {print $1}' <<<"$out") $((c1 - c0))"
}

echo "1. keep-alive (wrk -t2 -c32 -d${SECONDS_PER_RUN}s, ABBA order), A = reverse_proxy, B = track + stick matcher + reverse_proxy:"
ratios=()
req_a=0 req_b=0 cpu_a=0 cpu_b=0
for i in $(seq 1 "$ROUNDS"); do
	if ((i % 2)); then
		read -r ra na ca < <(run_side http://127.0.0.1:18301/)
		read -r rb nb cb < <(run_side http://127.0.0.1:18302/)
	else
		read -r rb nb cb < <(run_side http://127.0.0.1:18302/)
		read -r ra na ca < <(run_side http://127.0.0.1:18301/)
	fi
	req_a=$((req_a + na)) req_b=$((req_b + nb)) cpu_a=$((cpu_a + ca)) cpu_b=$((cpu_b + cb))
	r=$(echo "scale=4; $rb / $ra" | bc -l)
	ratios+=("$r")
	echo "  round $i: A $ra req/s, B $rb req/s, B/A $r"
done
echo "  median of round ratios B/A = $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')"
echo "  edge CPU per request: A $(echo "scale=2; $cpu_a * 1000000 / $TICK / $req_a" | bc -l) us, B $(echo "scale=2; $cpu_b * 1000000 / $TICK / $req_b" | bc -l) us (B/A $(echo "scale=4; ($cpu_b / $req_b) / ($cpu_a / $req_a)" | bc -l))"

cat >"$BENCH_DIR/flood.lua" <<'LUA'
-- one new client key per request
math.randomseed(os.time())
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/", {["X-Client-Id"] = string.format("flood-%d-%d", math.random(1, 1e9), n)})
end
LUA

# edge_alive: fails with the edge's log when it is gone.
edge_alive() {
	kill -0 "$EDGE_PID" 2>/dev/null || { echo "the edge exited:" >&2; tail -20 "$BENCH_DIR/edge.log" >&2; exit 1; }
}

# legit_under_flood PORT: legit req/s on PORT while the flood runs on PORT.
legit_under_flood() {
	edge_alive
	wrk -t1 -c16 -d"$((SECONDS_PER_RUN + 2))s" -s "$BENCH_DIR/flood.lua" "http://127.0.0.1:$1/" >"$BENCH_DIR/flood.out" &
	local flood=$!
	sleep 1
	rps "http://127.0.0.1:$1/" -t1 -c16 -d"${SECONDS_PER_RUN}s" -H "X-Client-Id: legit-client"
	wait "$flood"
	awk '/requests in/ {print $1}' "$BENCH_DIR/flood.out" >"$BENCH_DIR/flood.count"
}

echo "2. legit client (wrk -t1 -c16) under a flood of distinct keys (wrk -t1 -c16), A = plain proxy, B = tracked in a 100k table:"
sum_a=0
sum_b=0
flooded=0
for i in $(seq 1 "$ROUNDS"); do
	ra=$(legit_under_flood 18301)
	rb=$(legit_under_flood 18303)
	flooded=$((flooded + $(cat "$BENCH_DIR/flood.count")))
	echo "  round $i: legit A $ra req/s, legit B $rb req/s"
	sum_a=$(echo "$sum_a + $ra" | bc -l)
	sum_b=$(echo "$sum_b + $rb" | bc -l)
done
echo "  legit ratio B/A = $(echo "scale=4; $sum_b / $sum_a" | bc -l)"
echo "  distinct flood keys sent to B: $flooded"
curl -s http://127.0.0.1:18399/metrics | grep -E '^rampart_stick_(entries|capacity|evictions_total)\{table="per_client"\}' | sed 's/^/  /'
echo "  edge RSS after the flood: $(awk '/VmRSS/ {print $2, $3}' "/proc/$EDGE_PID/status")"
