#!/usr/bin/env bash
# NFSv3 against NFSv4 and against NFS-Ganesha's NFSv3: the same client (nfsbench on libnfs 6,
# ../shared/peer), the same disk, the same run, alternating round by round.
#   perf/versus-v3.sh [rounds]        (run from the project's root; ../shared/peer/setup.sh once)
# Per round: each contender writes 2 GiB in 1 MiB UNSTABLE WRITEs, 16 in flight, rewriting its file in
# place (MB/s before COMMIT, and with COMMIT+CLOSE); then each reads its file, READ 1 MiB x16. Contenders: this server over
# NFSv3 and over NFSv4, Ganesha 4.3 (FSAL VFS) over NFSv3 and over NFSv4. Prints every round, the
# min/median/max of each, and the ratios of this server's NFSv3 to its NFSv4 and to Ganesha's NFSv3.
# COLD=1: every READ round starts with the page cache dropped (root), so each contender reads from the
# disk; otherwise Ganesha reads back what its writes left cached while this server's O_DIRECT writes
# left nothing there.
set -euo pipefail
COLD=${COLD:-0}
if [ "$COLD" = 1 ] && [ ! -w /proc/sys/vm/drop_caches ]; then echo "COLD=1 needs root (drop_caches)"; exit 1; fi
rounds=${1:-3}
peer=$(cd "$(dirname "$0")/../../shared/peer" && pwd)
PEER_DIR=${PEER_DIR:-$HOME/.cache/markbase-peer}
[ -x "$PEER_DIR/nfsbench" ] || "$peer/setup.sh"
NB="$PEER_DIR/nfsbench"; export NOPORTMAP="$PEER_DIR/noportmap.so"
. "$peer/ganesha.sh"
. "$(dirname "$0")/stats.sh"
cargo build --release --quiet
BIN=$PWD/target/release/markbase-nfs
T=$(mktemp -d "$PWD/target/versus-v3.XXXX")
MB_PORT=21215; G_PORT=21220
"$BIN" gen --db "$T/db.sqlite" --storage "$T/store" --nodes 200 >/dev/null
"$BIN" serve --db "$T/db.sqlite" --storage "$T/store" --port $MB_PORT --address 127.0.0.1 > "$T/serve.log" 2>&1 &
MB_PID=$!
trap 'kill $MB_PID 2>/dev/null; ganesha_stop; wait 2>/dev/null; rm -rf "$T"' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$MB_PORT) 2>/dev/null && break; sleep 0.1; done
ganesha_start $G_PORT "$T/gexport" "$T/grun" || { echo "ganesha did not start: $(tail -3 "$T/grun/ganesha.log")"; exit 1; }
# MOUNT: ours on the NFS port, Ganesha's on the next one (ganesha.sh).
declare -A URL=(
  [mb3]="nfs://127.0.0.1:$MB_PORT/bench3?version=3&mountport=$MB_PORT"
  [mb4]="nfs://127.0.0.1:$MB_PORT/bench4?version=4"
  [g3]="nfs://127.0.0.1:$G_PORT/export/bench3?version=3&mountport=$((G_PORT + 1))"
  [g4]="nfs://127.0.0.1:$G_PORT/export/bench4?version=4"
)
WHO="mb3 mb4 g3 g4"
S=2147483648
for w in $WHO; do "$NB" write "${URL[$w]}" $S 1048576 16 > /dev/null; done
sync
for i in $(seq 1 "$rounds"); do
  # The order turns by one each round, so no contender always goes first
  # (just after the sync) or last.
  all=($WHO); k=$(( (i - 1) % ${#all[@]} ))
  order="${all[*]:k} ${all[*]:0:k}"
  # Every contender writes, then every contender reads: a read never follows
  # the same contender's write straight away, while the disk still absorbs it.
  for w in $order; do
    o=$("$NB" overwrite "${URL[$w]}" $S 1048576 16 2>&1)
    echo "$o" | grep -oE 'io: [0-9.]+ s [0-9.]+ MB/s' | awk '{print $(NF-1)}' >> "$T/$w.w"
    echo "$o" | grep -oE 'COMMIT\+CLOSE: [0-9.]+ s [0-9.]+ MB/s' | awk '{print $(NF-1)}' >> "$T/$w.c"
  done
  sync
  for w in $order; do
    [ "$COLD" = 1 ] && { sync; echo 3 > /proc/sys/vm/drop_caches; }
    "$NB" read "${URL[$w]}" 0 1048576 16 2>&1 | grep -oE 'io: [0-9.]+ s [0-9.]+ MB/s' | awk '{print $(NF-1)}' >> "$T/$w.r"
    echo "round $i $w: write $(tail -1 "$T/$w.w") MB/s, +COMMIT $(tail -1 "$T/$w.c"), read $(tail -1 "$T/$w.r")"
  done
done
for k in w c r; do
  line="min/median/max $k MB/s:"
  for w in $WHO; do line="$line $w $(mmm < "$T/$w.$k")"; done
  echo "$line"
  echo "  median $k: NFSv3/NFSv4 (this server) $(ratio "$(med < "$T/mb3.$k")" "$(med < "$T/mb4.$k")")x," \
    "this server's NFSv3 / Ganesha's NFSv3 $(ratio "$(med < "$T/mb3.$k")" "$(med < "$T/g3.$k")")x"
done
