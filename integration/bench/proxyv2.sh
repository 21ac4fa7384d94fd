#!/usr/bin/env bash
# The cost of the proxy_v2 listener wrapper: HAProxy (mode tcp) forwards
# wrk's connections to one Caddy, plainly to a port without the wrapper (A)
# and with send-proxy-v2 and a CRC32C to a port behind proxy_v2 (B).
# Alternating runs; the figure is the ratio B/A, with keep-alive and with a
# new connection (and so a new header) per request.
#
#   integration/bench/proxyv2.sh [rounds] [seconds]
source "$(dirname "$0")/lib.sh"
need wrk wrk
need haproxy haproxy
need bc bc
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-8}
build_caddy

run_caddy edge "{
	admin off
	servers 127.0.0.1:18001 {
		listener_wrappers {
			proxy_v2 {
				trust 127.0.0.1/32
				untrusted reject
			}
			tls
		}
	}
}
http://:18000 {
	bind 127.0.0.1
	respond \"hello\"
}
http://:18001 {
	bind 127.0.0.1
	respond \"hello\"
}"
cat >"$BENCH_DIR/haproxy.cfg" <<CFG
global
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend plain
  bind 127.0.0.1:18100
  default_backend plain
frontend proxied
  bind 127.0.0.1:18101
  default_backend proxied
backend plain
  server caddy 127.0.0.1:18000
backend proxied
  server caddy 127.0.0.1:18001 send-proxy-v2 proxy-v2-options crc32c
CFG
haproxy -db -f "$BENCH_DIR/haproxy.cfg" >"$BENCH_DIR/haproxy.log" 2>&1 &
BENCH_PIDS+=($!)
wait_port 18000
wait_port 18001
wait_port 18100
wait_port 18101

echo "keep-alive (wrk -t2 -c32 -d${SECONDS_PER_RUN}s), A = plain, B = proxy_v2:"
ab_ratio "$ROUNDS" http://127.0.0.1:18100/ http://127.0.0.1:18101/ -t2 -c32 -d"${SECONDS_PER_RUN}s"
echo "new connection per request (Connection: close), A = plain, B = proxy_v2:"
ab_ratio "$ROUNDS" http://127.0.0.1:18100/ http://127.0.0.1:18101/ -t2 -c32 -d"${SECONDS_PER_RUN}s" -H "Connection: close"
