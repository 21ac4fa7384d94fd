#!/usr/bin/env bash
# Cache hits through Rampart (cache-handler + hide_origin + reverse_proxy)
# versus nginx 1.22 proxy_cache hits on the same object, and Rampart's hits
# versus its misses, in alternating wrk runs on loopback. Prints each round,
# the throughput ratios and the edge CPU time per request (from
# /proc/<pid>/stat: the process's own user+system time, which other load on
# a shared machine disturbs far less than throughput).
#
#   integration/bench/cache.sh                       # 6 rounds of 3 s per side and size
#   ROUNDS=10 DURATION=5s integration/bench/cache.sh
#
# One binary (go build ./cmd/caddy) runs the origin (file_server with a
# 1 KB and a 100 KB HTML page that link to the origin's own address,
# Cache-Control: public, max-age=3600) and the Rampart edge; nginx (Debian's
# nginx-light, two workers like Caddy's two threads on this machine) caches
# the same origin. A miss is a request with `Cache-Control: no-cache`: the
# edge asks the origin again, hide_origin rewrites the page, the cache
# stores it. All ports are free loopback ports chosen at start.
cd "$(dirname "$0")/../.."
source integration/bench/lib.sh
ROUNDS=${ROUNDS:-6} DURATION=${DURATION:-3s} CONNS=${CONNS:-32} THREADS=${THREADS:-1}
need wrk wrk; need nginx nginx-light; need curl curl; need python3 python3; need bc bc
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
work=$BENCH_DIR
chmod 755 "$work" # nginx workers (www-data when started as root) write their cache under it
CADDY=$work/caddy
build_caddy
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ORIGIN=$(free_port); EDGE=$(free_port); NGX=$(free_port)

mkdir -p "$work/www" "$work/nginx"
page() { # page SIZE: an HTML page of about SIZE bytes naming the origin
	python3 - "$1" "$ORIGIN" <<'PY'
import sys
size, port = int(sys.argv[1]), sys.argv[2]
line = f'<p><a href="http://127.0.0.1:{port}/next">next</a> some text of the page, some more text.</p>\n'
body = "<!doctype html>\n<html><body>\n"
while len(body) + len(line) < size - 16:
    body += line
print(body + "</body></html>")
PY
}
page 1024 >"$work/www/1k.html"
page 102400 >"$work/www/100k.html"

quiet='admin off
	auto_https off
	log default {
		output discard
	}'
cat >"$work/origin" <<CFG
{
	$quiet
}
http://:$ORIGIN {
	bind 127.0.0.1
	header Server "Apache/2.4.41 (Ubuntu)"
	header Cache-Control "public, max-age=3600"
	root * $work/www
	file_server
}
CFG
cat >"$work/edge" <<CFG
{
	$quiet
	cache {
		default_cache_control no-store
	}
}
http://:$EDGE {
	bind 127.0.0.1
	header -Server
	cache
	hide_origin {
		origin origin.internal
	}
	reverse_proxy 127.0.0.1:$ORIGIN
}
CFG
cat >"$work/nginx/nginx.conf" <<CFG
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path $work/nginx/body;
	proxy_temp_path $work/nginx/proxy;
	fastcgi_temp_path $work/nginx/fcgi;
	uwsgi_temp_path $work/nginx/uwsgi;
	scgi_temp_path $work/nginx/scgi;
	proxy_cache_path $work/nginx/cache keys_zone=pages:10m;
	server {
		listen 127.0.0.1:$NGX;
		location / {
			proxy_pass http://127.0.0.1:$ORIGIN;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_cache pages;
			add_header X-Cache-Status \$upstream_cache_status;
		}
	}
}
CFG
"$CADDY" run --adapter caddyfile --config "$work/origin" >"$work/origin.log" 2>&1 &
BENCH_PIDS+=($!)
"$CADDY" run --adapter caddyfile --config "$work/edge" >"$work/edge.log" 2>&1 &
EDGE_PID=$!
BENCH_PIDS+=($EDGE_PID)
"$NGINX" -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' >"$work/nginx.log" 2>&1 &
NGX_PID=$!
BENCH_PIDS+=($NGX_PID)
for p in $ORIGIN $EDGE $NGX; do wait_port "$p"; done

# Warm both caches and check that the next request is a hit with a
# scrubbed body.
for size in 1k 100k; do
	for _ in 1 2; do
		curl -s -o /dev/null "http://127.0.0.1:$EDGE/$size.html"
		curl -s -o /dev/null "http://127.0.0.1:$NGX/$size.html"
	done
	status=$(curl -s -D - -o "$work/body" "http://127.0.0.1:$EDGE/$size.html" | tr -d '\r' | awk -F': ' 'tolower($1)=="cache-status"{print $2}')
	case "$status" in *"; hit;"*) ;; *) echo "Rampart: /$size.html is not a hit: $status" >&2; exit 1 ;; esac
	if grep -q "127.0.0.1:$ORIGIN" "$work/body"; then echo "Rampart's cached /$size.html names the origin" >&2; exit 1; fi
	ngx=$(curl -s -D - -o /dev/null "http://127.0.0.1:$NGX/$size.html" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache-status"{print $2}')
	[ "$ngx" = HIT ] || { echo "nginx: /$size.html is not a hit: $ngx" >&2; exit 1; }
done
miss=$(curl -s -D - -o /dev/null -H 'Cache-Control: no-cache' "http://127.0.0.1:$EDGE/1k.html" | tr -d '\r' | awk -F': ' 'tolower($1)=="cache-status"{print $2}')
case "$miss" in *fwd=*) ;; *) echo "Rampart: a no-cache request was not forwarded: $miss" >&2; exit 1 ;; esac

CLK=$(getconf CLK_TCK)
# ticks PID...: user+system CPU ticks of the processes and their children
ticks() {
	local total=0 p
	for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
		total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
	done
	echo "$total"
}
# run URL PID [wrk args]: prints "req/s requests cpu-ticks" of one wrk run
run() {
	local url=$1 pid=$2 t0 t1 out
	shift 2
	t0=$(ticks "$pid")
	out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "$@" "$url")
	t1=$(ticks "$pid")
	echo "$(echo "$out" | awk '/Requests\/sec/{print $2}') $(echo "$out" | awk '/requests in/{print $1}') $((t1 - t0))"
}
us() { echo "$1 * 1000000 / $CLK / $2" | bc -l; }

echo "cache hits: nginx $("$NGINX" -v 2>&1 | sed 's/.*: //') proxy_cache vs Rampart (cache-handler + hide_origin); $ROUNDS rounds of $DURATION, $CONNS connections"
for size in 1k 100k; do
	url_r="http://127.0.0.1:$EDGE/$size.html"
	url_n="http://127.0.0.1:$NGX/$size.html"
	sn=0; sr=0; sm=0; cn=0; cr=0; cm=0; qn=0; qr=0; qm=0
	for i in $(seq "$ROUNDS"); do
		# the order rotates every round so that drift hits every side alike
		case $((i % 3)) in
		1) read -r n nn tn < <(run "$url_n" "$NGX_PID"); read -r r nr tr < <(run "$url_r" "$EDGE_PID")
		   read -r m nm tm < <(run "$url_r" "$EDGE_PID" -H 'Cache-Control: no-cache') ;;
		2) read -r r nr tr < <(run "$url_r" "$EDGE_PID"); read -r m nm tm < <(run "$url_r" "$EDGE_PID" -H 'Cache-Control: no-cache')
		   read -r n nn tn < <(run "$url_n" "$NGX_PID") ;;
		0) read -r m nm tm < <(run "$url_r" "$EDGE_PID" -H 'Cache-Control: no-cache'); read -r n nn tn < <(run "$url_n" "$NGX_PID")
		   read -r r nr tr < <(run "$url_r" "$EDGE_PID") ;;
		esac
		printf '%s round %d: nginx hit %s req/s, Rampart hit %s req/s, Rampart miss %s req/s\n' "$size" "$i" "$n" "$r" "$m"
		sn=$(echo "$sn + $n" | bc -l); sr=$(echo "$sr + $r" | bc -l); sm=$(echo "$sm + $m" | bc -l)
		cn=$((cn + tn)); cr=$((cr + tr)); cm=$((cm + tm)); qn=$((qn + nn)); qr=$((qr + nr)); qm=$((qm + nm))
	done
	un=$(us "$cn" "$qn"); ur=$(us "$cr" "$qr"); um=$(us "$cm" "$qm")
	printf '%s: throughput Rampart hit / nginx hit %.3f, Rampart hit / Rampart miss %.3f\n' "$size" \
		"$(echo "$sr / $sn" | bc -l)" "$(echo "$sr / $sm" | bc -l)"
	printf '%s: edge CPU per request (the origin not counted): nginx hit %.1f us, Rampart hit %.1f us, Rampart miss %.1f us\n' \
		"$size" "$un" "$ur" "$um"
	printf '%s: CPU per request ratios: Rampart hit / nginx hit %.2f, Rampart miss / Rampart hit %.2f\n' "$size" \
		"$(echo "$ur / $un" | bc -l)" "$(echo "$um / $ur" | bc -l)"
done
