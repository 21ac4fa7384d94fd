#!/usr/bin/env bash
# Header-only hide_origin versus plain reverse_proxy, alternating wrk runs
# on loopback. Prints each run and the throughput ratio hide_origin/vanilla.
#
#   integration/bench/hideorigin.sh            # 5 rounds of 10 s each side
#   ROUNDS=3 DURATION=5s integration/bench/hideorigin.sh
#
# One binary (go build -o /tmp/rampart-caddy ./cmd/caddy) runs three
# processes: an origin that answers like a careless app (Server,
# X-Powered-By, a Location naming its address), a vanilla edge and a
# hide_origin edge (body off: headers only). wrk alternates between the two
# edges so that machine noise hits both alike.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
BIN=/tmp/rampart-caddy
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }
go build -o "$BIN" ./cmd/caddy

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/origin" <<CFG
{
	admin off
	auto_https off
	log default {
		output discard
	}
}
http://127.0.0.1:19180 {
	header Server "Apache/2.4.41 (Ubuntu)"
	header X-Powered-By "PHP/7.4.3"
	header Location "http://127.0.0.1:19180/next"
	header Set-Cookie "sid=1; Domain=127.0.0.1; Path=/"
	respond "hello from the origin, plain text body" 200
}
CFG
cat > "$work/vanilla" <<CFG
{
	admin off
	auto_https off
	log default {
		output discard
	}
}
http://127.0.0.1:19181 {
	reverse_proxy 127.0.0.1:19180
}
CFG
cat > "$work/hidden" <<CFG
{
	admin off
	auto_https off
	log default {
		output discard
	}
}
http://127.0.0.1:19182 {
	hide_origin {
		origin origin.internal
		body off
	}
	reverse_proxy 127.0.0.1:19180
}
CFG
for c in origin vanilla hidden; do
	"$BIN" run --adapter caddyfile --config "$work/$c" >"$work/$c.log" 2>&1 &
	pids+=($!)
done
for p in 19180 19181 19182; do
	for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
done
# check that the hidden edge really scrubs
loc=$(curl -s -D - -o /dev/null http://127.0.0.1:19182/ | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
if [ "$loc" != "http://127.0.0.1:19182/next" ]; then
	echo "hide_origin edge did not rewrite Location: '$loc'" >&2
	tail -n 5 "$work"/*.log >&2
	exit 1
fi

rps() { wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "$1" | awk '/Requests\/sec/{print $2}'; }
sum_v=0; sum_h=0
for i in $(seq "$ROUNDS"); do
	v=$(rps http://127.0.0.1:19181/)
	h=$(rps http://127.0.0.1:19182/)
	echo "round $i: vanilla $v req/s, hide_origin $h req/s"
	sum_v=$(echo "$sum_v + $v" | bc -l); sum_h=$(echo "$sum_h + $h" | bc -l)
done
ratio=$(echo "$sum_h / $sum_v" | bc -l)
printf 'hide_origin/vanilla throughput ratio: %.4f (cost %.2f%%)\n' "$ratio" "$(echo "(1 - $ratio) * 100" | bc -l)"
