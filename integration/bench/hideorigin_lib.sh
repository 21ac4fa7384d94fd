# Helpers for the hide_origin benchmarks (source after lib.sh): an nginx
# origin serving generated HTML pages (plain, .gz and .zst files with their
# Content-Encoding), Caddy proxies pinned to one core with GOMAXPROCS=1,
# and alternating wrk runs that measure each proxy's CPU time per request
# from /proc.
need wrk wrk
need bc bc
need curl curl
need nginx nginx-light
need taskset util-linux
need gzip gzip
need zstd zstd

PROXY_CORE=${PROXY_CORE:-0}   # the proxies' core
LOAD_CORE=${LOAD_CORE:-1}     # wrk and the origin
CLK=$(getconf CLK_TCK)

# make_page FILE SIZE MATCHES ORIGIN: an HTML page of SIZE bytes with
# MATCHES links to http://ORIGIN/..., spread evenly, plus FILE.gz and
# FILE.zst of it.
make_page() {
	local file=$1 size=$2 matches=$3 origin=$4
	awk -v size="$size" -v matches="$matches" -v origin="$origin" 'BEGIN {
		srand(size + matches)
		split("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua enim minim veniam quis nostrud exercitation ullamco laboris nisi aliquip commodo consequat duis aute irure reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint occaecat cupidatat proident sunt culpa officia deserunt mollit anim id est laborum", words, " ")
		head = "<!doctype html><html><head><title>page</title></head><body>\n"
		tailtext = "</body></html>\n"
		link = "<a href=\"http://" origin "/page\">origin</a>\n"
		out = head; n = 0
		body = size - length(head) - length(tailtext)
		paras = int((body - matches * length(link)) / 110)
		every = matches > 0 ? int(paras / matches) : 0
		if (every < 1) every = 1
		for (i = 0; i < paras; i++) {
			if (matches > 0 && i % every == 0 && n < matches) { out = out link; n++ }
			para = "<p>"
			while (length(para) < 100) para = para words[int(rand() * 60) + 1] " " int(rand() * 1000) " "
			out = out para "</p>\n"
		}
		while (n < matches) { out = out link; n++ }
		if (length(out) > size - length(tailtext)) out = substr(out, 1, size - length(tailtext))
		pad = size - length(out) - length(tailtext)
		for (i = 0; i < pad; i++) out = out " "
		printf "%s%s", out, tailtext
	}' >"$file"
	gzip -6 -c "$file" >"$file.gz"
	zstd -q -3 -f -o "$file.zst" "$file"
}

# run_nginx PORT ROOT: serves ROOT on 127.0.0.1:PORT, .gz and .zst files
# with their Content-Encoding and text/html, pinned to the load core.
run_nginx() {
	local port=$1 root=$2 dir="$BENCH_DIR/nginx"
	mkdir -p "$dir/logs"
	chmod a+x "$BENCH_DIR"
	chmod -R a+rX "$root"
	cat >"$dir/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path $dir;
	proxy_temp_path $dir;
	fastcgi_temp_path $dir;
	uwsgi_temp_path $dir;
	scgi_temp_path $dir;
	types { text/html html; }
	server {
		listen 127.0.0.1:$port;
		root $root;
		location ~ \.gz\$ { types {} default_type "text/html; charset=utf-8"; add_header Content-Encoding gzip; }
		location ~ \.zst\$ { types {} default_type "text/html; charset=utf-8"; add_header Content-Encoding zstd; }
	}
}
CONF
	taskset -c "$LOAD_CORE" nginx -p "$dir" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
	BENCH_PIDS+=($!)
}

# run_proxy NAME CADDYFILE: a Caddy process on the proxy core, GOMAXPROCS=1;
# its pid is in PROXY_PID[NAME].
declare -A PROXY_PID
run_proxy() {
	local file="$BENCH_DIR/$1.Caddyfile"
	printf '%s\n' "$2" >"$file"
	GOMAXPROCS=1 taskset -c "$PROXY_CORE" "$CADDY" run --config "$file" >"$BENCH_DIR/$1.log" 2>&1 &
	BENCH_PIDS+=($!)
	PROXY_PID[$1]=$!
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# cpu_run PID URL [wrk args...]: one wrk run (on the load core); prints
# "requests ticks" (ticks: the proxy's utime+stime during the run).
cpu_run() {
	local pid=$1 url=$2 t0 t1 out
	shift 2
	t0=$(ticks "$pid")
	out=$(taskset -c "$LOAD_CORE" wrk -t1 -c"${CONNS:-16}" -d"${DURATION:-3s}" "$@" "$url")
	t1=$(ticks "$pid")
	if echo "$out" | grep -q "Non-2xx"; then echo "non-2xx answers from $url" >&2; exit 1; fi
	echo "$(echo "$out" | awk '/requests in/{print $1}') $((t1 - t0))"
}

# cpu_ratio ROUNDS PID_A URL_A PID_B URL_B [wrk args...]: alternating (ABBA)
# runs; prints "us_a us_b ratio" where us_* is CPU µs per request and ratio
# is us_a / us_b (A's cost over B's: >= 1 means B is as cheap as A).
cpu_ratio() {
	local rounds=$1 pa=$2 ua=$3 pb=$4 ub=$5 i ra ta rb tb na=0 nb=0 sa=0 sb=0
	shift 5
	for i in $(seq "$rounds"); do
		if ((i % 2)); then
			read -r ra ta < <(cpu_run "$pa" "$ua" "$@"); read -r rb tb < <(cpu_run "$pb" "$ub" "$@")
		else
			read -r rb tb < <(cpu_run "$pb" "$ub" "$@"); read -r ra ta < <(cpu_run "$pa" "$ua" "$@")
		fi
		na=$((na + ra)); nb=$((nb + rb)); sa=$((sa + ta)); sb=$((sb + tb))
	done
	local usa usb
	usa=$(echo "$sa * 1000000 / $CLK / $na" | bc -l); usb=$(echo "$sb * 1000000 / $CLK / $nb" | bc -l)
	printf '%.1f %.1f %.3f\n' "$usa" "$usb" "$(echo "$usa / $usb" | bc -l)"
}

# cpu_pair ROUNDS PID_A URL_A PID_B URL_B [wrk args...]: each round runs
# one wrk against A and one against B at the same time (both proxies on the
# proxy core, both wrk on the load core, the starting order alternating), so
# that the other load on the machine hits both sides alike; prints
# "us_a us_b ratio" as cpu_ratio does.
cpu_pair() {
	local rounds=$1 pa=$2 ua=$3 pb=$4 ub=$5 i na=0 nb=0 sa=0 sb=0 a0 b0 wa wb
	shift 5
	for i in $(seq "$rounds"); do
		a0=$(ticks "$pa"); b0=$(ticks "$pb")
		if ((i % 2)); then
			taskset -c "$LOAD_CORE" wrk -t1 -c"${CONNS:-16}" -d"${DURATION:-3s}" "$@" "$ua" >"$BENCH_DIR/wrk.a" & wa=$!
			taskset -c "$LOAD_CORE" wrk -t1 -c"${CONNS:-16}" -d"${DURATION:-3s}" "$@" "$ub" >"$BENCH_DIR/wrk.b" & wb=$!
		else
			taskset -c "$LOAD_CORE" wrk -t1 -c"${CONNS:-16}" -d"${DURATION:-3s}" "$@" "$ub" >"$BENCH_DIR/wrk.b" & wb=$!
			taskset -c "$LOAD_CORE" wrk -t1 -c"${CONNS:-16}" -d"${DURATION:-3s}" "$@" "$ua" >"$BENCH_DIR/wrk.a" & wa=$!
		fi
		wait "$wa" "$wb"
		sa=$((sa + $(ticks "$pa") - a0)); sb=$((sb + $(ticks "$pb") - b0))
		if grep -q "Non-2xx" "$BENCH_DIR/wrk.a" "$BENCH_DIR/wrk.b"; then echo "non-2xx answers from $ua or $ub" >&2; exit 1; fi
		na=$((na + $(awk '/requests in/{print $1}' "$BENCH_DIR/wrk.a"))); nb=$((nb + $(awk '/requests in/{print $1}' "$BENCH_DIR/wrk.b")))
	done
	local usa usb
	usa=$(echo "$sa * 1000000 / $CLK / $na" | bc -l); usb=$(echo "$sb * 1000000 / $CLK / $nb" | bc -l)
	printf '%.1f %.1f %.3f\n' "$usa" "$usb" "$(echo "$usa / $usb" | bc -l)"
}

# pick_measure: sets measure to the function MODE names (alternate:
# cpu_ratio, the default; pair: cpu_pair) and MODE to its default.
pick_measure() {
	MODE=${MODE:-alternate}
	case $MODE in
	alternate) measure=cpu_ratio ;;
	pair) measure=cpu_pair ;;
	*) echo "MODE is alternate or pair" >&2; exit 2 ;;
	esac
}

# check_body URL WANT_SUBSTRING REJECT_SUBSTRING [curl args]: the proxy
# really rewrites (or really passes) before it is measured.
check_body() {
	local url=$1 want=$2 reject=$3 body
	shift 3
	body=$(curl -s --compressed "$@" "$url")
	if [ -n "$want" ] && [[ "$body" != *"$want"* ]]; then echo "$url: no '$want' in the body" >&2; exit 1; fi
	if [ -n "$reject" ] && [[ "$body" == *"$reject"* ]]; then echo "$url: '$reject' left in the body" >&2; exit 1; fi
}

# free_port: a free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_http URL: waits until URL answers.
wait_http() {
	for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
	echo "$1 does not answer" >&2
	exit 1
}

# GLOBAL is the global options block every proxy uses.
GLOBAL='	admin off
	auto_https off
	log default {
		output discard
	}'
