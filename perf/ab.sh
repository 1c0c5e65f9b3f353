#!/usr/bin/env bash
# A/B of server tunings with aja, alternating, each run between two probes
# of the disk (2 GiB `dd oflag=direct`): this machine's disk moves more
# between runs than most changes do, so each run's write rate is also
# given against the mean of its probes (see perf/README.md, finding 24).
#
#   perf/ab.sh ROUNDS FILE_SIZE CONFIG...
#   perf/ab.sh 4 8GiB q0.toml q32.toml     # each CONFIG is a tuning.toml for the server aja starts
#   perf/ab.sh 3 4GiB old/markbase-nfs@tuning.toml target/release/markbase-nfs@tuning.toml
#                                          # BINARY@CONFIG: another build (its own client and server)
#   AJA_ARGS=--mac-uncached perf/ab.sh 3 4GiB range.toml full.toml   # more aja options for every run
#
# CSV and SVG of each run go to perf/results/ab-<config>-<round>.*
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { sed -n 2,9p "$0"; exit 2; }
rounds=$1 size=$2
shift 2
mkdir -p perf/results
cargo build --release --quiet
probe() {
	rm -f target/ab-probe
	dd if=/dev/zero of=target/ab-probe bs=1M count=2048 oflag=direct 2>&1 |
		awk '/copied/ { print $(NF-1) * ($NF == "GB/s" ? 1000 : 1) }'
	rm -f target/ab-probe
}
for ((i = 1; i <= rounds; i++)); do
	for entry in "$@"; do
		bin=target/release/markbase-nfs cfg=$entry name=$(basename "$entry" .toml)
		if [[ $entry == *@* ]]; then
			bin=${entry%@*} cfg=${entry##*@}
			# Named by the checkout the build is in: <checkout>/target/release/markbase-nfs.
			name=$(basename "$(dirname "$(dirname "$(dirname "$(realpath "$bin")")")")")-$(basename "$cfg" .toml)
		fi
		before=$(probe)
		# shellcheck disable=SC2086 # AJA_ARGS is a list of options
		out=$("$bin" aja --no-baseline --config "$cfg" --file-size "$size" ${AJA_ARGS:-} \
			--dir "$PWD/target" --csv "perf/results/ab-$name-$i.csv" --svg "perf/results/ab-$name-$i.svg" 2>/dev/null || true)
		after=$(probe)
		echo "$out" | awk -v name="$name" -v i="$i" -v a="$before" -v b="$after" '
			/^write / { w = $2; p50 = $7; p99 = $10; max = $13 }
			/^read /  { r = $2 }
			/the other/ && !over { over = $(NF-3) }
			END { printf "%s round %d: disk %s / %s MB/s; write %s MB/s (p50 %s, p99 %s, max %s ms, %s over 9.82 ms), %.2f of the disk; read %s MB/s\n",
				name, i, a, b, w, p50, p99, max, over, 2 * w / (a + b), r }'
	done
done
