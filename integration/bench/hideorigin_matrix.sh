#!/usr/bin/env bash
# The hide_origin response matrix: proxy CPU time per request of
# hide_origin (B) against plain reverse_proxy (A) for every body size
# (1 KB, 64 KB, 1 MB HTML), origin coding (identity, gzip, zstd: the
# origin's files served with their Content-Encoding and Content-Length) and
# number of origin URLs to rewrite (0, 20). Then the re-encoding cost:
# hide_origin rewriting a gzip body (decode, rewrite, gzip again) against
# Caddy's own `encode gzip` compressing the same page from an identity
# origin, both against plain reverse_proxy of the gzip file.
#
# Proxies pinned to one core with GOMAXPROCS=1, wrk and an nginx origin on
# the other; alternating ABBA runs; the figure is A µs / B µs per request
# (1.0: hide_origin costs nothing; 0.5: twice the plain proxy's CPU).
#
#   integration/bench/hideorigin_matrix.sh          # 4 rounds of 3 s per side and cell
#   ROUNDS=6 DURATION=4s integration/bench/hideorigin_matrix.sh
#   MODE=pair integration/bench/hideorigin_matrix.sh   # both sides at once (cpu_pair)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/hideorigin_lib.sh"
ROUNDS=${ROUNDS:-4}
build_caddy

ORIGIN=$(free_port); PLAIN=$(free_port); HIDDEN=$(free_port)
mkdir -p "$BENCH_DIR/www"
for size in 1k:1024 64k:65536 1m:1048576; do
	for matches in 0 20; do
		make_page "$BENCH_DIR/www/${size%%:*}-$matches.html" "${size##*:}" "$matches" "127.0.0.1:$ORIGIN"
	done
done
run_nginx "$ORIGIN" "$BENCH_DIR/www"
run_proxy plain "{
$GLOBAL
}
http://127.0.0.1:$PLAIN {
	reverse_proxy 127.0.0.1:$ORIGIN
}
http://127.0.0.2:$PLAIN {
	encode {
		gzip
		minimum_length 0
	}
	reverse_proxy 127.0.0.1:$ORIGIN
}"
run_proxy hidden "{
$GLOBAL
}
http://127.0.0.1:$HIDDEN {
	hide_origin
	reverse_proxy 127.0.0.1:$ORIGIN
}"
wait_http "http://127.0.0.1:$ORIGIN/1k-0.html"
wait_http "http://127.0.0.1:$PLAIN/1k-0.html"
wait_http "http://127.0.0.1:$HIDDEN/1k-0.html"
check_body "http://127.0.0.1:$HIDDEN/64k-20.html.gz" "http://127.0.0.1:$HIDDEN/page" "127.0.0.1:$ORIGIN" -H "Accept-Encoding: gzip"
check_body "http://127.0.0.1:$HIDDEN/1m-20.html.zst" "" "127.0.0.1:$ORIGIN" -H "Accept-Encoding: zstd"

P=${PROXY_PID[plain]}; H=${PROXY_PID[hidden]}
pick_measure
echo "proxies on core $PROXY_CORE (GOMAXPROCS=1), wrk and nginx on core $LOAD_CORE; $MODE, $ROUNDS rounds of ${DURATION:-3s} per side; load: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| body | coding | origin URLs | plain µs/req | hide_origin µs/req | plain/hide_origin |\n|---|---|---|---|---|---|\n'
for size in 1k 64k 1m; do
	for coding in identity gzip zstd; do
		for matches in 0 20; do
			file="$size-$matches.html"; hdr=()
			case $coding in
			gzip) file+=.gz; hdr=(-H "Accept-Encoding: gzip") ;;
			zstd) file+=.zst; hdr=(-H "Accept-Encoding: zstd") ;;
			esac
			read -r a b r < <($measure "$ROUNDS" "$P" "http://127.0.0.1:$PLAIN/$file" "$H" "http://127.0.0.1:$HIDDEN/$file" "${hdr[@]}")
			printf '| %s | %s | %s | %s | %s | %s |\n' "$size" "$coding" "$matches" "$a" "$b" "$r"
		done
	done
done
echo
echo "gzip re-encoding against Caddy's encode (20 URLs): CPU µs per request"
printf '| body | plain reverse_proxy of the gzip file | encode gzip (identity origin) | hide_origin re-encoding gzip |\n|---|---|---|---|\n'
for size in 64k 1m; do
	# one process serves both sides here: alternate runs whatever MODE says
	read -r a e _ < <(cpu_ratio "$ROUNDS" "$P" "http://127.0.0.1:$PLAIN/$size-20.html.gz" "$P" "http://127.0.0.2:$PLAIN/$size-20.html" -H "Accept-Encoding: gzip")
	read -r _ h _ < <($measure "$ROUNDS" "$P" "http://127.0.0.1:$PLAIN/$size-20.html.gz" "$H" "http://127.0.0.1:$HIDDEN/$size-20.html.gz" -H "Accept-Encoding: gzip")
	printf '| %s | %s | %s | %s |\n' "$size" "$a" "$e" "$h"
done
