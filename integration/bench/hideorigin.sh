#!/usr/bin/env bash
# hide_origin end to end on HTML pages: CPU time of the proxy per request,
# plain Caddy reverse_proxy (A) versus Rampart (B), alternating ABBA wrk
# runs, the proxies pinned to one core with GOMAXPROCS=1, wrk and an nginx
# origin on the other core. Prints A µs, B µs and A/B (the issue's figure:
# >= 0.97 on a 2 KB page with nothing to rewrite, >= 0.95 on a 64 KB page
# with 20 origin URLs, for track + stick + hide_origin).
#
# The first row is a control: plain Caddy against a second, identical
# plain Caddy process (the method's own spread around 1.0). MODE=pair runs
# the two sides of each round at the same time instead of one after the
# other (cpu_pair: the machine's other load hits both alike).
#
#   integration/bench/hideorigin.sh            # 10 rounds of 3 s per side
#   ROUNDS=20 DURATION=5s integration/bench/hideorigin.sh
#   MODE=pair ROUNDS=8 integration/bench/hideorigin.sh
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/hideorigin_lib.sh"
ROUNDS=${ROUNDS:-10}
build_caddy

ORIGIN=$(free_port); PLAIN=$(free_port); PLAIN2=$(free_port); RAMPART=$(free_port)
mkdir -p "$BENCH_DIR/www"
make_page "$BENCH_DIR/www/page2k.html" 2048 0 "127.0.0.1:$ORIGIN"
make_page "$BENCH_DIR/www/page64k.html" 65536 20 "127.0.0.1:$ORIGIN"
run_nginx "$ORIGIN" "$BENCH_DIR/www"

run_proxy plain "{
$GLOBAL
}
http://127.0.0.1:$PLAIN {
	reverse_proxy 127.0.0.1:$ORIGIN
}"
run_proxy plain2 "{
$GLOBAL
}
http://127.0.0.1:$PLAIN2 {
	reverse_proxy 127.0.0.1:$ORIGIN
}"
# one process, three sites: everything (track + stick matcher +
# hide_origin), hide_origin alone, track + stick alone
run_proxy rampart "{
$GLOBAL
	stick_table per_ip {
		type ip
		size 1m
		expire 10m
		store http_req_rate(10s) conn_cur gpc0
	}
}
http://127.0.0.1:$RAMPART {
	track per_ip {client_ip}
	@hot stick per_ip http_req_rate gt 1000000000
	respond @hot 429
	hide_origin
	reverse_proxy 127.0.0.1:$ORIGIN
}
http://127.0.0.2:$RAMPART {
	hide_origin
	reverse_proxy 127.0.0.1:$ORIGIN
}
http://127.0.0.3:$RAMPART {
	track per_ip {client_ip}
	@hot stick per_ip http_req_rate gt 1000000000
	respond @hot 429
	reverse_proxy 127.0.0.1:$ORIGIN
}"
wait_http "http://127.0.0.1:$ORIGIN/page2k.html"
wait_http "http://127.0.0.1:$PLAIN/page2k.html"
wait_http "http://127.0.0.1:$PLAIN2/page2k.html"
wait_http "http://127.0.0.1:$RAMPART/page2k.html"
check_body "http://127.0.0.1:$PLAIN/page64k.html" "http://127.0.0.1:$ORIGIN/page" ""
check_body "http://127.0.0.1:$RAMPART/page64k.html" "http://127.0.0.1:$RAMPART/page" "127.0.0.1:$ORIGIN"

P=${PROXY_PID[plain]}; P2=${PROXY_PID[plain2]}; R=${PROXY_PID[rampart]}
pick_measure
echo "proxies on core $PROXY_CORE (GOMAXPROCS=1), wrk and nginx on core $LOAD_CORE; $MODE, $ROUNDS rounds of ${DURATION:-3s} per side; load: $(cut -d' ' -f1-3 /proc/loadavg)"
report() { read -r a b r; printf '%-58s plain %7s us  rampart %7s us  plain/rampart %s  (load %s)\n' "$1" "$a" "$b" "$r" "$(cut -d' ' -f1 /proc/loadavg)"; }
$measure "$ROUNDS" "$P" "http://127.0.0.1:$PLAIN/page2k.html" "$P2" "http://127.0.0.1:$PLAIN2/page2k.html" | report "control: 2 KB page, plain against plain"
$measure "$ROUNDS" "$P" "http://127.0.0.1:$PLAIN/page2k.html" "$R" "http://127.0.0.1:$RAMPART/page2k.html" | report "2 KB page, track + stick + hide_origin (target >= 0.97)"
$measure "$ROUNDS" "$P" "http://127.0.0.1:$PLAIN/page64k.html" "$R" "http://127.0.0.1:$RAMPART/page64k.html" | report "64 KB page, 20 URLs, track + stick + hide_origin (>= 0.95)"
$measure "$ROUNDS" "$P" "http://127.0.0.1:$PLAIN/page2k.html" "$R" "http://127.0.0.2:$RAMPART/page2k.html" | report "2 KB page, hide_origin alone"
$measure "$ROUNDS" "$P" "http://127.0.0.1:$PLAIN/page2k.html" "$R" "http://127.0.0.3:$RAMPART/page2k.html" | report "2 KB page, track + stick alone"
