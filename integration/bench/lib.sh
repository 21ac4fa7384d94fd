# Shared helpers for the wrk benchmarks: source it from a bench script.
# Everything listens on 127.0.0.1 and is stopped on exit.
set -euo pipefail

BENCH_DIR=$(mktemp -d)
BENCH_PIDS=()
cleanup() {
	for pid in "${BENCH_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$BENCH_DIR"
}
trap cleanup EXIT

# need BINARY PACKAGE: fail with the package to install when BINARY is missing.
need() {
	command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || { echo "missing $1: apt-get install $2" >&2; exit 2; }
}

# build_caddy: builds cmd/caddy (Caddy, the standard modules, caddy-l4 and
# Rampart) once into $CADDY; CADDY_BIN=FILE runs that binary instead (to
# measure another build of the same scripts).
build_caddy() {
	if [ -n "${CADDY_BIN:-}" ]; then
		CADDY=$CADDY_BIN
		return
	fi
	CADDY=${CADDY:-/tmp/rampart-caddy}
	(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && go build -o "$CADDY" ./cmd/caddy)
}

# run_caddy NAME CADDYFILE: starts Caddy with that config in the background.
run_caddy() {
	local file="$BENCH_DIR/$1.Caddyfile"
	printf '%s\n' "$2" >"$file"
	"$CADDY" run --config "$file" >"$BENCH_DIR/$1.log" 2>&1 &
	BENCH_PIDS+=($!)
}

# run_haproxy CONFIG: starts haproxy in the foreground (in the background of
# the script) with that configuration.
run_haproxy() {
	printf '%s\n' "$1" >"$BENCH_DIR/haproxy.cfg"
	haproxy -db -f "$BENCH_DIR/haproxy.cfg" >"$BENCH_DIR/haproxy.log" 2>&1 &
	BENCH_PIDS+=($!)
}

# wait_port PORT: waits until 127.0.0.1:PORT accepts connections.
wait_port() {
	for _ in $(seq 1 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "nothing listens on 127.0.0.1:$1" >&2
	exit 1
}

# rps URL [wrk args...]: requests per second of one wrk run.
rps() {
	local url=$1
	shift
	wrk "$@" "$url" | awk '/Requests\/sec/ {print $2}'
}

# ab_ratio ROUNDS URL_A URL_B [wrk args...]: alternates wrk runs on A and B
# and prints each pair and the ratio of the sums (B/A).
ab_ratio() {
	local rounds=$1 a=$2 b=$3
	shift 3
	local sum_a=0 sum_b=0
	for i in $(seq 1 "$rounds"); do
		local ra rb
		ra=$(rps "$a" "$@")
		rb=$(rps "$b" "$@")
		echo "  round $i: A $ra req/s, B $rb req/s"
		sum_a=$(echo "$sum_a + $ra" | bc -l)
		sum_b=$(echo "$sum_b + $rb" | bc -l)
	done
	echo "  ratio B/A = $(echo "scale=4; $sum_b / $sum_a" | bc -l)"
}

# cpu_ticks PID: user+system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# cluster_sync_stats ADMIN_PORT TABLE: a shared table's sync rounds so far
# on the edge with that admin port: count, mean duration, failed rounds,
# deltas lost after 64 unconfirmed batches (from its /metrics).
cluster_sync_stats() {
	curl -s "http://127.0.0.1:$1/metrics" | awk -v t="{table=\"$2\"}" '
		$1 == "rampart_cluster_sync_duration_seconds_sum" t {sum = $2}
		$1 == "rampart_cluster_sync_duration_seconds_count" t {n = $2}
		$1 == "rampart_cluster_sync_errors_total" t {err = $2}
		$1 == "rampart_cluster_lost_deltas_total" t {lost = $2}
		END {printf "%d sync rounds, mean %.1f ms, %d failed, %d deltas lost", n, n ? sum * 1000 / n : 0, err, lost}'
}
