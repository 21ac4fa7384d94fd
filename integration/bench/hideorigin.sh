#!/usr/bin/env bash
# Header-only hide_origin versus plain reverse_proxy, alternating wrk runs
# on loopback. Prints each run and the throughput ratio hide_origin/vanilla.
#
#   integration/bench/hideorigin.sh            # 20 rounds of 3 s each side
#   ROUNDS=10 DURATION=5s integration/bench/hideorigin.sh
#
# One binary (go build -o /tmp/rampart-caddy ./cmd/caddy) runs three
# processes: an origin that answers like a careless app (Server,
# X-Powered-By, a Location naming its address), a vanilla edge and a
# hide_origin edge (body off: headers only). wrk alternates between the two
# edges so that machine noise hits both alike.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-20}
DURATION=${DURATION:-3s}
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

# one wrk run against port $1; prints "req/s requests edge-cpu-ticks"
CLK=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() {
	local port=$1 pid=$2 t0 t1 out
	t0=$(ticks "$pid")
	out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$port/")
	t1=$(ticks "$pid")
	echo "$(echo "$out" | awk '/Requests\/sec/{print $2}') $(echo "$out" | awk '/requests in/{print $1}') $((t1 - t0))"
}
sum_v=0; sum_h=0; ratios=(); cpu_v=0; cpu_h=0; req_v=0; req_h=0
for i in $(seq "$ROUNDS"); do
	# ABBA: the order flips every round so that drift hits both sides alike
	if (( i % 2 )); then
		read -r v nv tv < <(run 19181 "${pids[1]}"); read -r h nh th < <(run 19182 "${pids[2]}")
	else
		read -r h nh th < <(run 19182 "${pids[2]}"); read -r v nv tv < <(run 19181 "${pids[1]}")
	fi
	r=$(echo "$h / $v" | bc -l)
	ratios+=("$r")
	printf 'round %d: vanilla %s req/s, hide_origin %s req/s, ratio %.4f\n' "$i" "$v" "$h" "$r"
	sum_v=$(echo "$sum_v + $v" | bc -l); sum_h=$(echo "$sum_h + $h" | bc -l)
	cpu_v=$((cpu_v + tv)); cpu_h=$((cpu_h + th)); req_v=$((req_v + nv)); req_h=$((req_h + nh))
done
ratio=$(echo "$sum_h / $sum_v" | bc -l)
median=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}')
printf 'hide_origin/vanilla throughput ratio: total %.4f, median of rounds %.4f (cost %.2f%% by the median)\n' \
	"$ratio" "$median" "$(echo "(1 - $median) * 100" | bc -l)"
# CPU time the edge process spent per request: insensitive to what else
# runs on the machine, unlike throughput
us_v=$(echo "$cpu_v * 1000000 / $CLK / $req_v" | bc -l); us_h=$(echo "$cpu_h * 1000000 / $CLK / $req_h" | bc -l)
printf 'edge CPU per request: vanilla %.1f us, hide_origin %.1f us: hide_origin costs %.2f%% more CPU per request\n' \
	"$us_v" "$us_h" "$(echo "($us_h / $us_v - 1) * 100" | bc -l)"
