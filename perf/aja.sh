#!/usr/bin/env bash
# AJA-System-Test-style sustained runs (see perf/README.md).
#
#   perf/aja.sh                                   # 4K DCI ProRes 4444, 16 GiB, built-in client + own server
#   perf/aja.sh --preset 4k-prores-4444xq --file-size 64GiB
#   perf/aja.sh --mount /Volumes/MarkBase         # a volume macOS/Linux mounted (F_NOCACHE / O_DIRECT)
#   perf/aja.sh --frame-bytes 8388608 --target 600
#
# Any `markbase-nfs aja` option may be given; defaults below are used for
# those that are not. The CSV of frame times and their
# graph (SVG and PNG) go to perf/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p perf/results
stamp=$(date +%Y%m%d-%H%M%S)
args=("$@")
has() { local o; for o in "${args[@]}"; do [ "$o" = "$1" ] && return 0; done; return 1; }
has --preset || has --frame-bytes || args+=(--preset 4k-prores-4444)
has --file-size || args+=(--file-size 16GiB)
has --target || args+=(--target 600)
has --csv || args+=(--csv "perf/results/aja-$stamp.csv")
has --svg || args+=(--svg "perf/results/aja-$stamp.svg")
# The built-in server's temporary catalog goes on the real disk, not tmpfs.
has --mount || has --server || has --dir || args+=(--dir "$PWD/target")
cargo build --release --quiet
exec target/release/markbase-nfs aja "${args[@]}"
