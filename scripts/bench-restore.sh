#!/usr/bin/env bash
# bench-restore.sh compares imgcast's partition restore with the C pipeline
# FOG and Clonezilla run (zstd -dc | partclone.restore) on the same image:
# a 1 GiB ext4 filesystem, mostly full, captured with partclone (default
# CRC32 checksums) and zstd. Runs alternate, each writing a fresh
# pre-sized target file and ending with its fsync; the medians and their
# ratio are printed. The same image is also restored as a one-partition
# image folder with `imgcast restore-disk`, plain and signed (imgcast sign;
# restore-disk -pubkey verifies every 4 MiB chunk before it is
# decompressed) in back-to-back pairs (PAIRS, default 20), which gives the
# cost of manifest verification: the median of the per-pair ratios, with a
# 95 % confidence interval. Not a test: it only reports.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
work=${BENCH_DIR:-build/bench}
mkdir -p "$work"
go build -o "$work/imgcast" ./cmds/imgcast

# BENCH_FIXTURE picks the filesystem's contents: "mixed" (the default;
# random and base64 data, compresses only to ~85 %: the worst case for
# verification, which hashes the compressed bytes) or "system" (~900 MB of
# this machine's own libraries, locales and Python modules, like an OS
# partition).
fixture=${BENCH_FIXTURE:-mixed}
case $fixture in
mixed) img=$work/fs.pcl.zst folders=$work/folder key=$work/key ;;
system) img=$work/fs-system.pcl.zst folders=$work/folder-system key=$work/key-system ;;
*) echo "bench: BENCH_FIXTURE must be mixed or system, not $fixture" >&2; exit 1 ;;
esac
if [[ ! -s $img ]]; then
  echo "bench: building the 1 GiB ext4 fixture '$fixture' (once; kept in $work)"
  rm -rf "$work/tree" "$work/fs.img"
  mkdir -p "$work/tree"
  if [[ $fixture == mixed ]]; then
    # ~380 MiB of incompressible data and ~520 MiB of text-like data.
    for i in $(seq 1 19); do head -c 20M /dev/urandom > "$work/tree/random$i.bin"; done
    for i in $(seq 1 13); do head -c 30M /dev/urandom | base64 > "$work/tree/text$i.txt"; done
  else
    # Whole directories, in this order, while the tree stays under 900 MB.
    for d in /usr/lib/x86_64-linux-gnu /usr/share/locale /usr/lib/python3* /usr/bin /usr/share/doc; do
      [[ -d $d ]] || continue
      if (($(du -sm "$work/tree" | cut -f1) + $(du -sm "$d" | cut -f1) > 900)); then continue; fi
      mkdir -p "$work/tree$(dirname "$d")"
      cp -a "$d" "$work/tree$d"
    done
    echo "bench: fixture tree $(du -sm "$work/tree" | cut -f1) MB"
  fi
  truncate -s 1G "$work/fs.img"
  mkfs.ext4 -q -F -E nodiscard -b 4096 -d "$work/tree" "$work/fs.img"
  rm -rf "$work/tree"
  partclone.ext4 -c -s "$work/fs.img" -o - -L "$work/clone.log" -q 2>/dev/null | zstd -q -T0 -3 -c > "$img.tmp"
  mv "$img.tmp" "$img"
  rm -f "$work/fs.img"
fi

# The signed folder: the same image as d1p1.img of a 1 GiB partition.
folder=$folders/bench
if [[ ! -s $folder/d1.manifest || $folder/d1p1.img -ot "$img" ]]; then
  rm -rf "$folders" "$key.key" "$key.pub"
  mkdir -p "$folder"
  ln "$img" "$folder/d1p1.img" 2>/dev/null || cp "$img" "$folder/d1p1.img"
  printf 'label: dos\nunit: sectors\n\n/dev/sda1 : start=2048, size=2097152, type=83\n' > "$folder/d1.partitions"
  "$work/imgcast" keygen "$key" >/dev/null
  t0=$(date +%s.%N)
  "$work/imgcast" sign -key "$key.key" "$folder"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "signing took %.2f s\n", b - a}'
fi

# BENCH_TARGET_DIR=/dev/shm takes the host's disk writeback, the noisiest
# part on a shared machine, out of the comparison.
targets=${BENCH_TARGET_DIR:-$work}
target=$targets/target.raw
theirs_out=$targets/target-partclone.raw
disk=$targets/disk.raw
# fresh FILE SIZE: a new pre-sized target, with nothing of the last run
# left to write back.
fresh() { rm -f "$1"; truncate -s "$2" "$1"; sync; }
# timed NAME CMD...: runs CMD (a pipeline inside bash -c) and appends its wall
# time to NAME_wall and its CPU time (user+sys of every process) to NAME_cpu.
# On a shared machine the CPU time is the steadier of the two.
TIMEFORMAT='%R %U %S'
timed() {
  local name=$1 t
  shift
  t=$({ time bash -euo pipefail -c "$1" >/dev/null 2>"$work/cmd.err"; } 2>&1) ||
    { echo "bench: failed: $1" >&2; cat "$work/cmd.err" >&2; exit 1; }
  read -r real user sys <<<"$t"
  eval "${name}_wall+=($real)"
  eval "${name}_cpu+=($(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.3f", u + s}'))"
}

declare -a theirs_wall theirs_cpu ours_wall ours_cpu plain_wall plain_cpu signed_wall signed_cpu cost_wall cost_cpu
for ((r = 1; r <= rounds; r++)); do
  fresh "$theirs_out" 1G
  timed theirs "zstd -dc '$img' | partclone.restore -s - -O '$theirs_out' -C -L '$work/restore.log'"
  fresh "$target" 1G
  timed ours "'$work/imgcast' restore-partition -q '$img' '$target'"
  echo "round $r (wall/cpu s): zstd|partclone.restore ${theirs_wall[-1]}/${theirs_cpu[-1]}," \
    "imgcast restore-partition ${ours_wall[-1]}/${ours_cpu[-1]}"
done
# The figures mean nothing unless both wrote the same bytes.
cmp "$target" "$theirs_out"
rm -f "$target"

# Verification cost: plain and signed restore-disk in pairs, back to back
# with nothing else in between, alternating which goes first. In the
# rounds above, with the C pipeline and restore-partition between them,
# the shared machine made one or the other take twice its CPU time in
# half of the rounds; in tight pairs that happens far less often.
pairs=${PAIRS:-20}
plain_cmd="'$work/imgcast' restore-disk -q '$folder' '$disk'"
signed_cmd="'$work/imgcast' restore-disk -q -pubkey '$key.pub' '$folder' '$disk'"
for ((p = 1; p <= pairs; p++)); do
  if ((p % 2)); then
    fresh "$disk" 1026M; timed plain "$plain_cmd"
    fresh "$disk" 1026M; timed signed "$signed_cmd"
  else
    fresh "$disk" 1026M; timed signed "$signed_cmd"
    fresh "$disk" 1026M; timed plain "$plain_cmd"
  fi
  cost_wall+=("$(awk -v a="${signed_wall[-1]}" -v b="${plain_wall[-1]}" 'BEGIN {printf "%.4f", a / b}')")
  cost_cpu+=("$(awk -v a="${signed_cpu[-1]}" -v b="${plain_cpu[-1]}" 'BEGIN {printf "%.4f", a / b}')")
  echo "pair $p (wall/cpu s): restore-disk ${plain_wall[-1]}/${plain_cpu[-1]}, restore-disk signed ${signed_wall[-1]}/${signed_cpu[-1]}"
done
# The signed restore must have written the same partition too.
fresh "$disk" 1026M
bash -euo pipefail -c "$signed_cmd" >/dev/null
cmp -i 1048576:0 -n 1073741824 "$disk" "$theirs_out"
echo "outputs: identical (cmp: restore-partition's and the signed restore-disk's partition against partclone's)"
rm -f "$theirs_out" "$disk"

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
size=$(stat -c %s "$img")
echo "image: $(basename "$img") (fixture $fixture), $size bytes compressed; medians of $rounds rounds, restore-disk of $pairs pairs"
printf '%-32s %8s %8s\n' "" "wall s" "cpu s"
for v in theirs:"zstd -dc | partclone.restore" ours:"imgcast restore-partition" plain:"imgcast restore-disk" signed:"imgcast restore-disk -pubkey"; do
  name=${v%%:*}
  eval "w=\$(median \"\${${name}_wall[@]}\"); c=\$(median \"\${${name}_cpu[@]}\")"
  printf '%-32s %8.2f %8.2f\n' "${v#*:}" "$w" "$c"
  eval "m_${name}_wall=$w m_${name}_cpu=$c"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo "ratio imgcast / C pipeline (wall):        $(ratio "$m_ours_wall" "$m_theirs_wall")"
echo "ratio signed restore-disk / C (wall):     $(ratio "$m_signed_wall" "$m_theirs_wall")"
awk -v a="$m_signed_wall" -v b="$m_plain_wall" -v c="$m_signed_cpu" -v d="$m_plain_cpu" \
  'BEGIN {printf "manifest verification cost, ratio of medians: %+.1f%% wall, %+.1f%% cpu (signed / plain restore-disk)\n", (a / b - 1) * 100, (c / d - 1) * 100}'
# median_ci VALUES...: the median with a distribution-free 95 % confidence
# interval: with n values, the k-th smallest to the k-th largest, k =
# (n - 1.96 sqrt(n)) / 2 rounded up (ranks 6 and 15 of 20, 14 and 27 of
# 40; the binomial distribution's order statistics). It assumes nothing
# about the noise except that pairs are independent and each is as likely
# to come out above the true median as below it.
median_ci() {
  printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1}
    END {
      m = a[int((NR + 1) / 2)]
      x = (NR - 1.96 * sqrt(NR)) / 2
      k = int(x) + (x > int(x))
      if (k < 1) printf "%+.1f%% (too few pairs for a 95%% interval)", (m - 1) * 100
      else printf "%+.1f%% (95%% interval %+.1f%% to %+.1f%%, %d pairs)", (m - 1) * 100, (a[k] - 1) * 100, (a[NR + 1 - k] - 1) * 100, NR
    }'
}
echo "manifest verification cost, median of per-pair ratios: wall $(median_ci "${cost_wall[@]}"), cpu $(median_ci "${cost_cpu[@]}")"
# On a shared machine some runs take twice the CPU time for the same work;
# the best run of each is the least disturbed figure.
best() { printf '%s\n' "$@" | sort -n | head -1; }
awk -v a="$(best "${signed_wall[@]}")" -v b="$(best "${plain_wall[@]}")" -v c="$(best "${signed_cpu[@]}")" -v d="$(best "${plain_cpu[@]}")" \
  'BEGIN {printf "manifest verification cost, best run of each: %.2f s vs %.2f s (%+.1f%%) wall, %.2f s vs %.2f s (%+.1f%%) cpu\n", a, b, (a / b - 1) * 100, c, d, (c / d - 1) * 100}'
