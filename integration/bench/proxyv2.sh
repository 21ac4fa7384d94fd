#!/usr/bin/env bash
# The cost of the proxy_v2 listener wrapper: HAProxy (mode tcp) forwards
# wrk's connections to one Caddy, plainly to a port without the wrapper (A),
# with send-proxy-v2 and a CRC32C to a port behind proxy_v2 (B), and the same
# header to a port behind Caddy's own proxy_protocol wrapper (C, which
# go-proxyproto serves). Alternating runs; the figures are the ratios B/A
# (the whole cost of the PROXY hop, HAProxy's side included) and B/C
# (Rampart against Caddy's built-in), with keep-alive and with a new
# connection (and so a new header) per request.
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
	servers 127.0.0.1:18002 {
		listener_wrappers {
			proxy_protocol {
				allow 127.0.0.1/32
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
}
http://:18002 {
	bind 127.0.0.1
	respond \"hello\"
}"
run_haproxy "global
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
frontend builtin
  bind 127.0.0.1:18102
  default_backend builtin
backend plain
  server caddy 127.0.0.1:18000
backend proxied
  server caddy 127.0.0.1:18001 send-proxy-v2 proxy-v2-options crc32c
backend builtin
  server caddy 127.0.0.1:18002 send-proxy-v2 proxy-v2-options crc32c"
wait_port 18000
wait_port 18001
wait_port 18100
wait_port 18101
wait_port 18002
wait_port 18102

for mode in keep-alive close; do
	args=(-t2 -c32 -d"${SECONDS_PER_RUN}s")
	[ "$mode" = close ] && args+=(-H "Connection: close")
	echo "$mode: A = no PROXY header, B = proxy_v2"
	ab_ratio "$ROUNDS" http://127.0.0.1:18100/ http://127.0.0.1:18101/ "${args[@]}"
	echo "$mode: A = Caddy's proxy_protocol, B = proxy_v2"
	ab_ratio "$ROUNDS" http://127.0.0.1:18102/ http://127.0.0.1:18101/ "${args[@]}"
done
