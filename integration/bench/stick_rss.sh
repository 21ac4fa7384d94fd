#!/usr/bin/env bash
# Stick table memory as the process pays it: the same flood of distinct
# 32-byte string keys into HAProxy's stick table and into Rampart's, each
# storing http_req_rate(10s), a concurrent counter (HAProxy conn_cur,
# Rampart req_cur) and gpc0, in a 1m-entry table that the flood does not
# fill (no eviction). Each side is flooded in 5 s wrk runs until its table
# holds at least the target number of entries, so both pay for about the
# same count. The figure is the growth of each process's RSS over the flood
# divided by the entries its table holds afterwards.
#
#   integration/bench/stick_rss.sh [target entries]
source "$(dirname "$0")/lib.sh"
need wrk wrk
need haproxy haproxy
need curl curl
need bc bc
TARGET=${1:-400000}
build_caddy

run_haproxy "global
	maxconn 1024
defaults
	mode http
	timeout client 10s
	timeout server 10s
	timeout connect 1s
frontend ft
	bind 127.0.0.1:18411
	stick-table type string len 32 size 1m expire 10m store http_req_rate(10s),conn_cur,gpc0
	http-request return status 200 content-type text/plain lf-string \"%[table_cnt(ft)]\" if { path /count }
	http-request track-sc0 req.hdr(x-key)
	http-request return status 200 content-type text/plain string ok"
HAPROXY_PID=${BENCH_PIDS[-1]}
run_caddy edge "{
	admin 127.0.0.1:18499
	stick_table per_key {
		type string len 32
		size 1m
		expire 10m
		store http_req_rate(10s) req_cur gpc0
	}
}
http://:18412 {
	bind 127.0.0.1
	track per_key {http.request.header.X-Key}
	respond ok
}"
EDGE_PID=${BENCH_PIDS[-1]}
for p in 18411 18412 18499; do wait_port "$p"; done

# Distinct 32-byte keys: wrk run, thread and a counter, zero-padded.
cat >"$BENCH_DIR/keys.lua" <<'LUA'
local counter = 0
local id = 0
local run = 0
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("id", threads)
end
init = function(args)
  id = wrk.thread:get("id")
  run = tonumber(args[1])
end
request = function()
  counter = counter + 1
  return wrk.format("GET", "/", {["X-Key"] = string.format("k%02d%03d%026d", id, run, counter)})
end
LUA

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# flood NAME PID PORT ENTRIES_COMMAND: warms up, floods, prints the figure.
flood() {
	local name=$1 pid=$2 port=$3 count_cmd=$4 before after entries
	wrk -t1 -c8 -d2s -H "X-Key: warmup" "http://127.0.0.1:$port/" >/dev/null
	before=$(rss_kb "$pid")
	entries=0
	for run in $(seq 1 40); do
		wrk -t2 -c32 -d5s -s "$BENCH_DIR/keys.lua" "http://127.0.0.1:$port/" -- "$run" >"$BENCH_DIR/$name.wrk"
		entries=$(eval "$count_cmd")
		((entries >= TARGET)) && break
	done
	sleep 1
	after=$(rss_kb "$pid")
	echo "  $name: $entries entries, RSS $before kB -> $after kB: $(echo "scale=1; ($after - $before) * 1024 / $entries" | bc -l) B/entry"
}

echo "RSS per entry, a flood of distinct string(32) keys (wrk -t2 -c32, 5 s runs until >= $TARGET entries), http_req_rate(10s) + a concurrent counter + gpc0:"
flood haproxy "$HAPROXY_PID" 18411 "curl -s http://127.0.0.1:18411/count"
flood rampart "$EDGE_PID" 18412 "curl -s http://127.0.0.1:18499/metrics | awk '/^rampart_stick_entries\\{table=\"per_key\"\\}/ {print \$2}'"
