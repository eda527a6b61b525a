#!/usr/bin/env bash
# bench-restore.sh compares imgcast's partition restore with the C pipeline
# FOG and Clonezilla run (zstd -dc | partclone.restore) on the same image:
# a 1 GiB ext4 filesystem, mostly full, captured with partclone (default
# CRC32 checksums) and zstd. Runs alternate, each writing a fresh
# pre-sized target file and ending with its fsync; the medians and their
# ratio are printed. The same image is also restored as a one-partition
# image folder with `imgcast restore-disk`, once plain and once signed
# (imgcast sign; restore-disk -pubkey verifies every 4 MiB chunk before it
# is decompressed), which gives the cost of manifest verification. Not a
# test: it only reports.
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

# The signed folder: the same image as d1p1.img of a 1 GiB partition.
folder=$work/folder/bench
if [[ ! -s $folder/d1.manifest || $folder/d1p1.img -ot "$img" ]]; then
  rm -rf "$work/folder" "$work/key.key" "$work/key.pub"
  mkdir -p "$folder"
  ln "$img" "$folder/d1p1.img" 2>/dev/null || cp "$img" "$folder/d1p1.img"
  printf 'label: dos\nunit: sectors\n\n/dev/sda1 : start=2048, size=2097152, type=83\n' > "$folder/d1.partitions"
  "$work/imgcast" keygen "$work/key" >/dev/null
  t0=$(date +%s.%N)
  "$work/imgcast" sign -key "$work/key.key" "$folder"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "signing took %.2f s\n", b - a}'
fi

target=$work/target.raw
theirs_out=$work/target-partclone.raw
disk=$work/disk.raw
now() { date +%s.%N; }
fresh() { rm -f "$target"; truncate -s 1G "$target"; sync; }
fresh_disk() { rm -f "$disk"; truncate -s $((1024 + 2))M "$disk"; sync; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'; }

declare -a ours theirs plain signed
for ((r = 1; r <= rounds; r++)); do
  fresh
  t0=$(now)
  zstd -dc "$img" | partclone.restore -s - -O "$target" -C -L "$work/restore.log" >/dev/null 2>&1
  t1=$(now)
  theirs+=("$(elapsed "$t0" "$t1")")
  fresh
  t0=$(now)
  "$work/imgcast" restore-partition -q "$img" "$target" >/dev/null
  t1=$(now)
  ours+=("$(elapsed "$t0" "$t1")")
  fresh_disk
  t0=$(now)
  "$work/imgcast" restore-disk -q "$folder" "$disk" >/dev/null
  t1=$(now)
  plain+=("$(elapsed "$t0" "$t1")")
  fresh_disk
  t0=$(now)
  "$work/imgcast" restore-disk -q -pubkey "$work/key.pub" "$folder" "$disk" >/dev/null
  t1=$(now)
  signed+=("$(elapsed "$t0" "$t1")")
  echo "round $r: zstd|partclone.restore ${theirs[-1]} s, imgcast restore-partition ${ours[-1]} s," \
    "restore-disk ${plain[-1]} s, restore-disk signed ${signed[-1]} s"
done
# The figures mean nothing unless all wrote the same bytes: $target holds
# restore-partition's output of the last round and $disk the signed
# restore-disk's; compare both with partclone's.
rm -f "$theirs_out"
truncate -s 1G "$theirs_out"
zstd -dc "$img" | partclone.restore -s - -O "$theirs_out" -C -L "$work/restore.log" >/dev/null 2>&1
cmp "$target" "$theirs_out"
cmp -i 1048576:0 -n 1073741824 "$disk" "$theirs_out"
echo "outputs: identical (cmp; the signed restore-disk's partition too)"
rm -f "$target" "$theirs_out" "$disk"

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_theirs=$(median "${theirs[@]}")
m_ours=$(median "${ours[@]}")
m_plain=$(median "${plain[@]}")
m_signed=$(median "${signed[@]}")
size=$(stat -c %s "$img")
echo "image: $(basename "$img"), $size bytes compressed"
printf 'zstd -dc | partclone.restore: %.2f s (median of %d)\n' "$m_theirs" "$rounds"
printf 'imgcast restore-partition:    %.2f s (median of %d)\n' "$m_ours" "$rounds"
printf 'imgcast restore-disk:         %.2f s (median of %d)\n' "$m_plain" "$rounds"
printf 'imgcast restore-disk -pubkey: %.2f s (median of %d; every chunk verified)\n' "$m_signed" "$rounds"
awk -v a="$m_ours" -v b="$m_theirs" 'BEGIN {printf "ratio imgcast / C pipeline:   %.2f\n", a / b}'
awk -v a="$m_signed" -v b="$m_theirs" 'BEGIN {printf "ratio signed / C pipeline:    %.2f\n", a / b}'
awk -v a="$m_signed" -v b="$m_plain" 'BEGIN {printf "manifest verification cost:   %+.1f%% (signed / plain restore-disk)\n", (a / b - 1) * 100}'
