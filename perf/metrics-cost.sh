#!/usr/bin/env bash
# What scraping the metrics endpoint costs a WRITE stream: one server with
# [metrics] on, the same nfsbench stream (libnfs 6, NFSv4, 2 GiB in 1 MiB
# UNSTABLE WRITEs, 16 in flight, rewriting one file; figure before COMMIT)
# run with and without a scraper (GET /metrics every SCRAPE_S seconds,
# default 1: 15 times Prometheus's default rate), alternating, round by
# round. Prints each round, min/median/max of each side and of the
# scraped/unscraped ratio of each pair; then the server's CPU time per
# scrape (Linux /proc).
#
#   perf/metrics-cost.sh [rounds]        (from the project's root; needs ../shared/peer set up)
set -euo pipefail
rounds=${1:-6}
scrape_s=${SCRAPE_S:-1}
PEER_DIR=${PEER_DIR:-$HOME/.cache/markbase-peer}
[ -x "$PEER_DIR/nfsbench" ] || ../shared/peer/setup.sh
NB="$PEER_DIR/nfsbench"; export NOPORTMAP="$PEER_DIR/noportmap.so"
cargo build --release --quiet
BIN=$PWD/target/release/markbase-nfs
T=$(mktemp -d "$PWD/target/metrics-cost.XXXX")
PORT=21230; MPORT=21231
printf '[server]\nport = %s\n[export]\ndb = "%s/db.sqlite"\n[metrics]\naddress = "127.0.0.1:%s"\n' \
	$PORT "$T" $MPORT > "$T/tuning.toml"
"$BIN" serve --config "$T/tuning.toml" > "$T/serve.log" 2>&1 &
PID=$!
SCRAPER=
trap 'kill $PID $SCRAPER 2>/dev/null; wait 2>/dev/null; rm -rf "$T"' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
U="nfs://127.0.0.1:$PORT/bench?version=4"; S=2147483648
"$NB" write "$U" $S 1048576 16 > /dev/null
sync
scraper() {
	while :; do
		curl -s -o /dev/null "http://127.0.0.1:$MPORT/metrics" || echo "scrape failed" >&2
		sleep "$scrape_s"
	done
}
stream() { "$NB" overwrite "$U" $S 1048576 16 2>&1 | grep -oE 'io: [0-9.]+ s [0-9.]+ MB/s' | awk '{print $(NF-1)}'; }
for i in $(seq 1 "$rounds"); do
	# Who goes first alternates, so a drift of the disk favours neither.
	order="scraped plain"; [ $((i % 2)) = 0 ] && order="plain scraped"
	for who in $order; do
		if [ $who = scraped ]; then scraper & SCRAPER=$!; fi
		mbs=$(stream)
		if [ $who = scraped ]; then kill $SCRAPER; wait $SCRAPER 2>/dev/null || true; SCRAPER=; fi
		echo "$mbs" >> "$T/$who"
		echo "round $i $who: $mbs MB/s"
	done
	paste "$T/scraped" "$T/plain" | tail -1 | awk '{printf "%.4f\n", $1 / $2}' >> "$T/ratio"
done
summary() { sort -n "$T/$1" | awk -v k="$1" '{a[NR]=$1} END{printf "%s: min %s median %s max %s\n", k, a[1], a[int((NR+1)/2)], a[NR]}'; }
summary plain; summary scraped; summary ratio
echo "series in a scrape: $(curl -s "http://127.0.0.1:$MPORT/metrics" | grep -c '^markbase_nfs_')"
# The server's own CPU time (utime + stime from /proc) over 500 scrapes
# in a row, the server otherwise idle: what one scrape costs it.
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
before=$(ticks)
for _ in $(seq 1 500); do curl -s -o /dev/null "http://127.0.0.1:$MPORT/metrics"; done
after=$(ticks)
awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" \
	'BEGIN { printf "server CPU per scrape: %.3f ms (500 scrapes)\n", t / hz / 500 * 1000 }'
