#!/usr/bin/env bash
# bench-restore.sh compares imgcast's partition restore with the C pipeline
# FOG and Clonezilla run (zstd -dc | partclone.restore) on the same image:
# a 1 GiB ext4 filesystem, mostly full, captured with partclone (default
# CRC32 checksums) and zstd. Runs alternate, each writing a fresh
# pre-sized target file and ending with its fsync; the medians and their
# ratio are printed. Not a test: it only reports.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
work=${BENCH_DIR:-build/bench}
mkdir -p "$work"
go build -o "$work/imgcast" ./cmds/imgcast

img=$work/fs.pcl.zst
if [[ ! -s $img ]]; then
  echo "bench: building the 1 GiB ext4 fixture (once; kept in $work)"
  rm -rf "$work/tree" "$work/fs.img"
  mkdir -p "$work/tree"
  # ~380 MiB of incompressible data and ~520 MiB of text-like data.
  for i in $(seq 1 19); do head -c 20M /dev/urandom > "$work/tree/random$i.bin"; done
  for i in $(seq 1 13); do head -c 30M /dev/urandom | base64 > "$work/tree/text$i.txt"; done
  truncate -s 1G "$work/fs.img"
  mkfs.ext4 -q -F -E nodiscard -b 4096 -d "$work/tree" "$work/fs.img"
  rm -rf "$work/tree"
  partclone.ext4 -c -s "$work/fs.img" -o - -L "$work/clone.log" -q 2>/dev/null | zstd -q -T0 -3 -c > "$img.tmp"
  mv "$img.tmp" "$img"
  rm -f "$work/fs.img"
fi

target=$work/target.raw
theirs_out=$work/target-partclone.raw
now() { date +%s.%N; }
fresh() { rm -f "$target"; truncate -s 1G "$target"; sync; }

declare -a ours theirs
for ((r = 1; r <= rounds; r++)); do
  fresh
  t0=$(now)
  zstd -dc "$img" | partclone.restore -s - -O "$target" -C -L "$work/restore.log" >/dev/null 2>&1
  t1=$(now)
  theirs+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')")
  fresh
  t0=$(now)
  "$work/imgcast" restore-partition -q "$img" "$target" >/dev/null
  t1=$(now)
  ours+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')")
  echo "round $r: zstd|partclone.restore ${theirs[-1]} s, imgcast ${ours[-1]} s"
done
# The figures mean nothing unless both wrote the same bytes: $target holds
# imgcast's output of the last round; compare it with partclone's.
rm -f "$theirs_out"
truncate -s 1G "$theirs_out"
zstd -dc "$img" | partclone.restore -s - -O "$theirs_out" -C -L "$work/restore.log" >/dev/null 2>&1
cmp "$target" "$theirs_out"
echo "outputs: identical (cmp)"
rm -f "$target" "$theirs_out"

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_theirs=$(median "${theirs[@]}")
m_ours=$(median "${ours[@]}")
size=$(stat -c %s "$img")
echo "image: $(basename "$img"), $size bytes compressed"
printf 'zstd -dc | partclone.restore: %.2f s (median of %d)\n' "$m_theirs" "$rounds"
printf 'imgcast restore-partition:    %.2f s (median of %d)\n' "$m_ours" "$rounds"
awk -v a="$m_ours" -v b="$m_theirs" 'BEGIN {printf "ratio imgcast / C pipeline:   %.2f\n", a / b}'
