#!/usr/bin/env bash
# SNI passthrough against HAProxy 2.6 (mode tcp, routing by req_ssl_sni) and
# caddy-l4's own proxy (l4proxy), each proxy pinned to CPU 0 with one
# thread (GOMAXPROCS=1, nbthread 1), the client and the TLS backend (nginx,
# its own certificate) on CPU 1. Rampart's passthrough shares its port with
# a Caddy-terminated site, as users run it.
#
#   integration/bench/passthrough.sh conn [rounds] [seconds]   # new TLS connection per request
#   integration/bench/passthrough.sh bulk [rounds] [size]      # one large download per run
#   integration/bench/passthrough.sh                            # both
#
# conn: wrk with `Connection: close`, so every request is a new TCP and TLS
# connection through the proxy (the edge's most common case). The figure is
# the proxy process's CPU time (utime+stime from /proc) per connection,
# alternating runs; ratio = HAProxy's / Rampart's (target >= 1.0: Rampart
# costs no more per connection).
# bulk: a download of SIZE through each; ratio = Rampart's throughput /
# HAProxy's (target >= 1.0). With STRACE=1 it first counts the system calls
# Caddy makes during one download, to show that the bytes move by splice(2).
# With PPROF=FILE it writes a 10 s CPU profile of Rampart under the conn load;
# with STRACE=1 conn also counts each proxy's system calls per connection.
source "$(dirname "$0")/lib.sh"
need nginx nginx-light
need haproxy haproxy
need curl curl
need openssl openssl
need bc bc
need wrk wrk
need taskset util-linux
MODE=${1:-all}
ROUNDS=${2:-3}
build_caddy

# free_port: a TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
BACKEND=$(free_port)
RAMPART=$(free_port)
RAMPART_HTTP=$(free_port)
RAMPART_ADMIN=$(free_port)
L4PROXY=$(free_port)
HAPROXY=$(free_port)
HAPROXY_SPLICE=$(free_port)

# the backend: nginx over TLS with its own certificate (name localhost,
# which resolves to 127.0.0.1 without touching /etc/hosts), a small page
# for conn and a sparse file for bulk
mkdir -p "$BENCH_DIR/www" "$BENCH_DIR/nginx"
printf 'ok\n' >"$BENCH_DIR/www/small"
truncate -s "$([ "$MODE" = bulk ] && echo "${3:-1G}" || echo 1G)" "$BENCH_DIR/www/big"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
	-addext subjectAltName=DNS:localhost -keyout "$BENCH_DIR/key.pem" -out "$BENCH_DIR/cert.pem" 2>/dev/null
cat >"$BENCH_DIR/nginx.conf" <<CFG
daemon off;
master_process off;
pid $BENCH_DIR/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $BENCH_DIR/nginx;
  proxy_temp_path $BENCH_DIR/nginx;
  fastcgi_temp_path $BENCH_DIR/nginx;
  uwsgi_temp_path $BENCH_DIR/nginx;
  scgi_temp_path $BENCH_DIR/nginx;
  sendfile on;
  server {
    listen 127.0.0.1:$BACKEND ssl;
    ssl_certificate $BENCH_DIR/cert.pem;
    ssl_certificate_key $BENCH_DIR/key.pem;
    root $BENCH_DIR/www;
  }
}
CFG
taskset -c 1 nginx -p "$BENCH_DIR/nginx" -c "$BENCH_DIR/nginx.conf" -e stderr >"$BENCH_DIR/nginx.log" 2>&1 &
BENCH_PIDS+=($!)

# R: Rampart, passthrough beside a terminated site on one HTTPS port
printf '%s\n' "{
	admin 127.0.0.1:$RAMPART_ADMIN
	http_port $RAMPART_HTTP
	https_port $RAMPART
	local_certs
	skip_install_trust
	passthrough {
		localhost 127.0.0.1:$BACKEND
	}
}
site.test {
	respond \"terminated\"
}" >"$BENCH_DIR/rampart.Caddyfile"
GOMAXPROCS=1 taskset -c 0 "$CADDY" run --config "$BENCH_DIR/rampart.Caddyfile" >"$BENCH_DIR/rampart.log" 2>&1 &
RAMPART_PID=$!
BENCH_PIDS+=($RAMPART_PID)

# L: caddy-l4's layer4 app with its proxy handler, routing by SNI
printf '%s\n' "{
	admin off
	layer4 {
		127.0.0.1:$L4PROXY {
			@sni tls sni localhost
			route @sni {
				proxy 127.0.0.1:$BACKEND
			}
		}
	}
}" >"$BENCH_DIR/l4proxy.Caddyfile"
GOMAXPROCS=1 taskset -c 0 "$CADDY" run --config "$BENCH_DIR/l4proxy.Caddyfile" >"$BENCH_DIR/l4proxy.log" 2>&1 &
L4PROXY_PID=$!
BENCH_PIDS+=($L4PROXY_PID)

# H: HAProxy mode tcp, routing by SNI (H2: the same with option splice-auto)
printf '%s\n' "global
  maxconn 4096
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend sni
  bind 127.0.0.1:$HAPROXY
  tcp-request inspect-delay 5s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend pass if { req_ssl_sni -i localhost }
frontend sni_splice
  bind 127.0.0.1:$HAPROXY_SPLICE
  option splice-auto
  tcp-request inspect-delay 5s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend pass if { req_ssl_sni -i localhost }
backend pass
  server nginx 127.0.0.1:$BACKEND" >"$BENCH_DIR/haproxy.cfg"
taskset -c 0 haproxy -db -f "$BENCH_DIR/haproxy.cfg" >"$BENCH_DIR/haproxy.log" 2>&1 &
HAPROXY_PID=$!
BENCH_PIDS+=($HAPROXY_PID)
for p in $BACKEND $RAMPART $L4PROXY $HAPROXY $HAPROXY_SPLICE; do wait_port "$p"; done

# wrk's concurrency; HAProxy's may differ (CONNS_HAPROXY) so that the
# proxies are compared at the same connection rate: HAProxy in mode tcp
# answers each short connection tens of milliseconds later than Rampart, so
# at one concurrency it runs at a fraction of Rampart's rate
CONNS=${CONNS:-16}
CONNS_HAPROXY=${CONNS_HAPROXY:-$CONNS}

# add A B, ratio A B: arithmetic on the figures (bc).
add() { echo "$1 + $2" | bc -l; }
ratio() { echo "scale=3; $1 / $2" | bc -l; }

TICK_US=$(echo "1000000 / $(getconf CLK_TCK)" | bc)

# conn_run PORT PID SECONDS [CONCURRENCY]: "<connections> <CPU µs per
# connection>" of one wrk run that opens a new TLS connection per request.
conn_run() {
	local before after out n
	before=$(cpu_ticks "$2")
	out=$(taskset -c 1 wrk -t1 -c"${4:-$CONNS}" -d"$3"s -H 'Connection: close' "https://localhost:$1/small")
	after=$(cpu_ticks "$2")
	n=$(echo "$out" | awk '/requests in/ {print $1}')
	echo "$n $(echo "scale=1; ($after - $before) * $TICK_US / $n" | bc -l)"
}

conn_bench() {
	local rounds=$1 secs=$2 sum_h=0 sum_r=0 sum_l=0
	echo "new TLS connection per request (wrk -t1 -c$CONNS -d${secs}s, HAProxy -c$CONNS_HAPROXY, Connection: close), CPU of the proxy per connection;"
	echo "H = HAProxy 2.6 mode tcp req_ssl_sni, R = Rampart passthrough, L = caddy-l4 l4proxy"
	conn_run "$HAPROXY" "$HAPROXY_PID" 2 >/dev/null # warm up every path
	conn_run "$RAMPART" "$RAMPART_PID" 2 >/dev/null
	conn_run "$L4PROXY" "$L4PROXY_PID" 2 >/dev/null
	if [ "${STRACE:-0}" = 1 ]; then
		need strace strace
		local name port pid n
		for name in H R L; do
			case $name in
			H) port=$HAPROXY pid=$HAPROXY_PID ;;
			R) port=$RAMPART pid=$RAMPART_PID ;;
			L) port=$L4PROXY pid=$L4PROXY_PID ;;
			esac
			strace -f -c -p "$pid" -o "$BENCH_DIR/strace-$name.txt" &
			local strace_pid=$!
			sleep 1
			read -r n _ < <(conn_run "$port" "$pid" 2)
			kill -INT "$strace_pid"
			wait "$strace_pid" || true
			echo "  $name: system calls per connection ($n connections under strace):"
			awk -v n="$n" '$4 ~ /^[0-9]+$/ && $NF != "total" {printf "    %-14s %6.2f\n", $NF, $4 / n; t += $4} END {printf "    %-14s %6.2f\n", "total", t / n}' "$BENCH_DIR/strace-$name.txt"
		done
	fi
	if [ -n "${PPROF:-}" ]; then
		(curl -s -o "$PPROF" "http://127.0.0.1:$RAMPART_ADMIN/debug/pprof/profile?seconds=10" &)
		conn_run "$RAMPART" "$RAMPART_PID" 11 >/dev/null
		sleep 1
		echo "  CPU profile of Rampart under this load: $PPROF"
	fi
	for i in $(seq 1 "$rounds"); do
		read -r nh h < <(conn_run "$HAPROXY" "$HAPROXY_PID" "$secs" "$CONNS_HAPROXY")
		read -r nr r < <(conn_run "$RAMPART" "$RAMPART_PID" "$secs")
		read -r nl l < <(conn_run "$L4PROXY" "$L4PROXY_PID" "$secs")
		echo "  round $i: H $h µs ($nh conns, $((nh / secs))/s), R $r µs ($nr conns, $((nr / secs))/s), L $l µs ($nl conns, $((nl / secs))/s)"
		sum_h=$(add "$sum_h" "$h")
		sum_r=$(add "$sum_r" "$r")
		sum_l=$(add "$sum_l" "$l")
	done
	echo "  CPU per connection H/R = $(ratio "$sum_h" "$sum_r")   (target >= 1.0)"
	echo "  CPU per connection L/R = $(ratio "$sum_l" "$sum_r")"
}

# speed PORT: bytes per second of one download of the big file through PORT.
speed() {
	taskset -c 1 curl -sk --http1.1 -o /dev/null -w '%{speed_download}' "https://localhost:$1/big"
}

bulk_bench() {
	local rounds=$1 sum_h=0 sum_h2=0 sum_r=0 sum_l=0
	if [ "${STRACE:-0}" = 1 ]; then
		need strace strace
		strace -f -c -e trace=splice,read,write -p "$RAMPART_PID" -o "$BENCH_DIR/strace.txt" &
		local strace_pid=$!
		sleep 1
		speed "$RAMPART" >/dev/null
		kill -INT "$strace_pid"
		wait "$strace_pid" || true
		echo "system calls of Caddy during one download:"
		cat "$BENCH_DIR/strace.txt"
	fi
	echo "1 download of $(du -h --apparent-size "$BENCH_DIR/www/big" | cut -f1) per run; H = HAProxy, H2 = HAProxy option splice-auto,"
	echo "R = Rampart passthrough, L = caddy-l4 l4proxy"
	speed "$HAPROXY" >/dev/null # warm up every path
	speed "$RAMPART" >/dev/null
	mib() { echo "$1 / 1048576" | bc; }
	for i in $(seq 1 "$rounds"); do
		local h r h2 l
		h=$(speed "$HAPROXY")
		r=$(speed "$RAMPART")
		h2=$(speed "$HAPROXY_SPLICE")
		l=$(speed "$L4PROXY")
		echo "  round $i: H $(mib "$h") MiB/s, R $(mib "$r") MiB/s, H2 $(mib "$h2") MiB/s, L $(mib "$l") MiB/s"
		sum_h=$(add "$sum_h" "$h")
		sum_h2=$(add "$sum_h2" "$h2")
		sum_r=$(add "$sum_r" "$r")
		sum_l=$(add "$sum_l" "$l")
	done
	echo "  throughput R/H  = $(ratio "$sum_r" "$sum_h")   (target >= 1.0)"
	echo "  throughput R/H2 = $(ratio "$sum_r" "$sum_h2")"
	echo "  throughput R/L  = $(ratio "$sum_r" "$sum_l")"
}

case $MODE in
conn) conn_bench "$ROUNDS" "${3:-5}" ;;
bulk) bulk_bench "$ROUNDS" ;;
all)
	conn_bench "$ROUNDS" 5
	bulk_bench "$ROUNDS"
	;;
*) echo "usage: $0 [conn|bulk|all] [rounds] [seconds|size]" >&2; exit 2 ;;
esac
