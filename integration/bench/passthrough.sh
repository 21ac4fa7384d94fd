#!/usr/bin/env bash
# SNI passthrough throughput: a 1 GiB download over TLS from nginx (the
# backend holds its own certificate) through Rampart's passthrough on a port
# shared with a Caddy-terminated site (B), and through HAProxy 2.6 in mode
# tcp routing by req_ssl_sni (A). Alternating runs; the figure is the ratio
# B/A of the summed throughput (target >= 0.90).
#
#   integration/bench/passthrough.sh [rounds] [size, e.g. 1G]
#
# With STRACE=1 it first counts the system calls Caddy makes during one
# download, to show that the bytes move by splice(2), not read/write.
source "$(dirname "$0")/lib.sh"
need nginx nginx-light
need haproxy haproxy
need curl curl
need openssl openssl
need bc bc
ROUNDS=${1:-3}
SIZE=${2:-1G}
build_caddy

# the backend: nginx serving a sparse file over TLS with its own certificate
mkdir -p "$BENCH_DIR/www" "$BENCH_DIR/nginx"
truncate -s "$SIZE" "$BENCH_DIR/www/big"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=pass.test \
	-addext subjectAltName=DNS:pass.test -keyout "$BENCH_DIR/key.pem" -out "$BENCH_DIR/cert.pem" 2>/dev/null
cat >"$BENCH_DIR/nginx.conf" <<CFG
daemon off;
master_process off;
pid $BENCH_DIR/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $BENCH_DIR/nginx;
  proxy_temp_path $BENCH_DIR/nginx;
  fastcgi_temp_path $BENCH_DIR/nginx;
  uwsgi_temp_path $BENCH_DIR/nginx;
  scgi_temp_path $BENCH_DIR/nginx;
  sendfile on;
  server {
    listen 127.0.0.1:18543 ssl;
    ssl_certificate $BENCH_DIR/cert.pem;
    ssl_certificate_key $BENCH_DIR/key.pem;
    root $BENCH_DIR/www;
  }
}
CFG
nginx -p "$BENCH_DIR/nginx" -c "$BENCH_DIR/nginx.conf" -e stderr >"$BENCH_DIR/nginx.log" 2>&1 &
BENCH_PIDS+=($!)

# B: Rampart, passthrough beside a terminated site on one HTTPS port
run_caddy edge "{
	admin off
	http_port 18580
	https_port 18544
	local_certs
	skip_install_trust
	passthrough {
		pass.test 127.0.0.1:18543
	}
}
site.test {
	respond \"terminated\"
}"

CADDY_PID=${BENCH_PIDS[-1]}

# A: HAProxy mode tcp, routing by SNI
run_haproxy "global
  maxconn 1024
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend sni
  bind 127.0.0.1:18545
  tcp-request inspect-delay 5s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend pass if { req_ssl_sni -i pass.test }
frontend sni_splice
  bind 127.0.0.1:18546
  option splice-auto
  tcp-request inspect-delay 5s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend pass if { req_ssl_sni -i pass.test }
backend pass
  server nginx 127.0.0.1:18543"
wait_port 18543
wait_port 18544
wait_port 18545
wait_port 18546

# speed PORT: bytes per second of one download of the file through PORT.
speed() {
	curl -sk --http1.1 --resolve "pass.test:$1:127.0.0.1" -o /dev/null -w '%{speed_download}' "https://pass.test:$1/big"
}

if [ "${STRACE:-0}" = 1 ]; then
	need strace strace
	strace -f -c -e trace=splice,read,write -p "$CADDY_PID" -o "$BENCH_DIR/strace.txt" &
	STRACE_PID=$!
	sleep 1
	speed 18544 >/dev/null
	kill -INT "$STRACE_PID"
	wait "$STRACE_PID" || true
	echo "system calls of Caddy during one download of $SIZE:"
	cat "$BENCH_DIR/strace.txt"
fi

echo "1 download of $SIZE per run; A = HAProxy 2.6 mode tcp (req_ssl_sni), A2 = the same with"
echo "option splice-auto, B = Rampart passthrough"
speed 18545 >/dev/null # warm up every path
speed 18546 >/dev/null
speed 18544 >/dev/null
sum_a=0
sum_a2=0
sum_b=0
mib() { echo "$1 / 1048576" | bc; }
for i in $(seq 1 "$ROUNDS"); do
	a=$(speed 18545)
	b=$(speed 18544)
	a2=$(speed 18546)
	echo "  round $i: A $(mib "$a") MiB/s, B $(mib "$b") MiB/s, A2 $(mib "$a2") MiB/s"
	sum_a=$(echo "$sum_a + $a" | bc -l)
	sum_a2=$(echo "$sum_a2 + $a2" | bc -l)
	sum_b=$(echo "$sum_b + $b" | bc -l)
done
echo "  ratio B/A  = $(echo "scale=4; $sum_b / $sum_a" | bc -l)   (target >= 0.90)"
echo "  ratio B/A2 = $(echo "scale=4; $sum_b / $sum_a2" | bc -l)"
