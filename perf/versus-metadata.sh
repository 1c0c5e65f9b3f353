#!/usr/bin/env bash
# Namespace changes one at a time: this server as built (intent journal, spare content files) against
# the same server with them off (each create, remove or rename waits for a synced SQLite commit, and a
# create for its own file creation and folder sync) and against NFS-Ganesha 4.3 (FSAL VFS, which syncs
# nothing on create or remove). The same client (nfsbench on libnfs 6, ../shared/peer), the same disk,
# the same run, alternating round by round.
#   perf/versus-metadata.sh [rounds] [files]   (run from the project's root; ../shared/peer/setup.sh once)
# Per round and contender: create+close, stat, remove of `files` files (default 2,000) over NFSv4, one
# request at a time; then the same creates and removes by 16 clients at once (16 nfsbench processes,
# each its own mount and folder, files/16 each; ops/s = all files over the wall time, and over the span
# of the clients' own loops, without their process starts and mounts). Prints every round, the
# min/median/max of each, and the ratios of the medians.
set -euo pipefail
rounds=${1:-3}; files=${2:-2000}
peer=$(cd "$(dirname "$0")/../../shared/peer" && pwd)
PEER_DIR=${PEER_DIR:-$HOME/.cache/markbase-peer}
[ -x "$PEER_DIR/nfsbench" ] || "$peer/setup.sh"
NB="$PEER_DIR/nfsbench"; export NOPORTMAP="$PEER_DIR/noportmap.so"
. "$peer/ganesha.sh"
. "$(dirname "$0")/stats.sh"
cargo build --release --quiet
BIN=$PWD/target/release/markbase-nfs
T=$(mktemp -d "$PWD/target/versus-metadata.XXXX")
ON_PORT=21215; OFF_PORT=21216; G_PORT=21220
sed -e 's/^journal = true/journal = false/' -e 's/^spare_files = [0-9]*/spare_files = 0/' tuning.toml > "$T/off.toml"
grep -q '^journal = false' "$T/off.toml" && grep -q '^spare_files = 0' "$T/off.toml"
for w in on off; do
  "$BIN" gen --db "$T/$w.sqlite" --storage "$T/$w.store" --nodes 200 >/dev/null
done
"$BIN" serve --db "$T/on.sqlite" --storage "$T/on.store" --port $ON_PORT --address 127.0.0.1 > "$T/on.log" 2>&1 &
ON_PID=$!
"$BIN" serve --config "$T/off.toml" --db "$T/off.sqlite" --storage "$T/off.store" --port $OFF_PORT \
  --address 127.0.0.1 > "$T/off.log" 2>&1 &
OFF_PID=$!
trap 'kill $ON_PID $OFF_PID 2>/dev/null; ganesha_stop; wait 2>/dev/null; rm -rf "$T"' EXIT
for p in $ON_PORT $OFF_PORT; do
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done
ganesha_start $G_PORT "$T/gexport" "$T/grun" || { echo "ganesha did not start: $(tail -3 "$T/grun/ganesha.log")"; exit 1; }
declare -A URL=(
  [journal]="nfs://127.0.0.1:$ON_PORT"
  [synced]="nfs://127.0.0.1:$OFF_PORT"
  [ganesha]="nfs://127.0.0.1:$G_PORT/export"
)
WHO="journal synced ganesha"
PAR=16
# ops/s of `files` creates or removes (nfsbench mkfiles|rmfiles) split over PAR clients at once, two ways:
# all files over the wall time from starting the first client to the last one's exit (16 process starts
# and mounts included: ~0.2 s, the same for every server), and all files over the span of the clients'
# own loops (first loop's start, its exit less the loop's time nfsbench prints, to the last exit).
parallel() {
  local op=$1 base=$2 pids=() t0 t1
  t0=$(date +%s.%N)
  for k in $(seq 1 $PAR); do
    { loop=$("$NB" "$op" "$base-p$k?version=4" $((files / PAR)) 2>/dev/null | grep -oE ': [0-9.]+ s' | tr -d ': s')
      echo "$(date +%s.%N) ${loop:-nan}"; } > "$T/loop.$k" &
    pids+=($!)
  done
  wait "${pids[@]}"
  t1=$(date +%s.%N)
  cat "$T"/loop.* | awk -v n=$(( (files / PAR) * PAR )) -v a="$t0" -v b="$t1" '
    { if ($2 == "nan") bad = 1; s = $1 - $2; if (NR == 1 || s < first) first = s; if ($1 > last) last = $1 }
    END { printf "%.0f %s\n", n / (b - a), bad ? "nan" : sprintf("%.0f", n / (last - first)) }'
  rm -f "$T"/loop.*
}
for i in $(seq 1 "$rounds"); do
  # The order turns by one each round: none always runs first, on the
  # freshest disk, or last.
  all=($WHO); k=$(( (i - 1) % ${#all[@]} ))
  for w in ${all[*]:k} ${all[*]:0:k}; do
    u="${URL[$w]}/meta$i?version=4"
    for op in mkfiles stat rmfiles; do
      "$NB" $op "$u" "$files" 2>&1 | grep -oE '[0-9]+ ops/s' | awk '{print $1}' >> "$T/$w.$op"
    done
    for op in mkfiles rmfiles; do
      read -r wall loops < <(parallel $op "${URL[$w]}/par$i")
      echo "$wall" >> "$T/$w.${op}16"; echo "$loops" >> "$T/$w.${op}16loops"
    done
    echo "round $i $w: create $(tail -1 "$T/$w.mkfiles") ops/s, stat $(tail -1 "$T/$w.stat"), remove $(tail -1 "$T/$w.rmfiles")," \
      "16 at once: create $(tail -1 "$T/$w.mkfiles16"), remove $(tail -1 "$T/$w.rmfiles16")" \
      "(loops only: $(tail -1 "$T/$w.mkfiles16loops"), $(tail -1 "$T/$w.rmfiles16loops"))"
  done
done
for k in mkfiles stat rmfiles mkfiles16 rmfiles16 mkfiles16loops rmfiles16loops; do
  line="min/median/max $k ops/s:"
  for w in $WHO; do line="$line $w $(mmm < "$T/$w.$k")"; done
  echo "$line"
  echo "  median $k: journal/synced $(ratio "$(med < "$T/journal.$k")" "$(med < "$T/synced.$k")")x," \
    "journal/ganesha $(ratio "$(med < "$T/journal.$k")" "$(med < "$T/ganesha.$k")")x"
done
