# Shell helpers the perf/versus-*.sh scripts source: figures of a column of numbers on stdin.
mmm() { sort -n | awk '{a[NR]=$1} END{printf "%s/%s/%s", a[1], a[int((NR+1)/2)], a[NR]}'; }  # min/median/max
med() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }                             # median
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }                               # a / b
