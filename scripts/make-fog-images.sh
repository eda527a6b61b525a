#!/usr/bin/env bash
# make-fog-images.sh STORE REFDIR
#
# Builds small test images the way FOG's client (FOS) captures them, into
# the image store STORE (served as FOG's /images), and keeps the disks
# they were captured from in REFDIR (to compare a restored disk with):
#
#   STORE/.mntcheck        the marker FOS checks in the store root
#   STORE/fog-n/           type n (resizable), GPT, imgFormat 5 (zstd):
#                          p1 ext4 and p3 NTFS shrunk to their minimum as
#                          FOS does (resize2fs -M, ntfsresize), p2 swap;
#                          d1.partitions, d1.minimum.partitions,
#                          d1.fixed_size_partitions, d1.original.swapuuids,
#                          d1.original.fstypes, d1.mbr (sgdisk backup),
#                          d1p1.img, d1p3.img (no image for swap)
#   STORE/fog-mps/         type mps, dos table, imgFormat 0 (gzip): p1 ext4
#                          (bootable), p2 FAT16, p3 an empty extended
#                          partition with an image (as old FOS captures
#                          have), d1.mbr (the area before p1)
#   STORE/fog-mpa/         type mpa, two disks (GPT 40 MiB ext4, dos 24 MiB
#                          FAT16), d1.size and d2.size, imgFormat 6 (zstd,
#                          split in SPLIT_SIZE pieces: .img, .img.001, …)
#   STORE/fog-dd/          type dd: the fog-mps disk as one
#                          partclone.imager stream, fog-dd.000 (imgFormat 5)
#   REFDIR/fog-n.raw, fog-mps.raw, fog-mpa-d1.raw, fog-mpa-d2.raw
#                          the disks before capture (fog-n's filesystems at
#                          full size, as the machine had them)
#
# Everything is made in files (no loop devices, no mounts) and takes a few
# seconds. Contents are random where they are data; UUIDs and labels are
# fixed. Each image folder appears only when complete.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 STORE REFDIR" >&2
  exit 2
fi
store=$1
refdir=$2
split_size=${SPLIT_SIZE:-1M}
export PATH=$PATH:/usr/sbin:/sbin
for tool in sfdisk sgdisk mkfs.ext4 resize2fs e2fsck dumpe2fs mkntfs ntfscp ntfsresize ntfsfix mkswap \
  mkfs.vfat fsck.vfat mcopy partclone.ext4 partclone.ntfs partclone.fat16 partclone.imager zstd pigz split; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is missing; run scripts/deps.sh" >&2; exit 1; }
done

mkdir -p "$store" "$refdir"
work=$(mktemp -d "$store/.fog-images.XXXXXX")
trap 'rm -rf "$work"' EXIT

quiet() {
  if ! "$@" >"$work/last.log" 2>&1; then
    cat "$work/last.log" >&2
    echo "$0: failed: $*" >&2
    return 1
  fi
}

# store_image SRC DEST FORMAT: compress a partclone stream file as FOS's
# uploadFormat does for imgFormat FORMAT; split formats are cut into
# SPLIT_SIZE pieces. RENAME=1 (partitions) renames the first piece
# DEST.000 to DEST, as FOS's savePartclone does; dd images keep .000.
store_image() {
  local src=$1 dest=$2 format=$3 rename=${RENAME:-1}
  case $format in
    0) pigz -c "$src" >"$dest.000" ;;
    2) pigz -c "$src" | split -a 3 -d -b "$split_size" - "$dest." ;;
    3) cp "$src" "$dest.000" ;;
    4) split -a 3 -d -b "$split_size" "$src" "$dest." ;;
    5) zstd -q -3 -c "$src" >"$dest.000" ;;
    6) zstd -q -3 -c "$src" | split -a 3 -d -b "$split_size" - "$dest." ;;
    *) echo "$0: imgFormat $format" >&2; return 1 ;;
  esac
  if [[ $rename == 1 ]]; then
    mv "$dest.000" "$dest"
  fi
}

# capture FS-TOOL SRC DEST FORMAT: partclone.FS-TOOL -c, with FOS's -a0
# (no checksums) except for partclone.imager. Each partclone run idles
# about 2 s before it exits, so captures run in the background (their
# own temporary files and log) and finish_captures waits for them all.
pids=()
capture() {
  local tool=$1 src=$2 dest=$3 format=$4 sum=-a0 tmp
  [[ $tool == imager ]] && sum=
  tmp=$work/$(basename "$(dirname "$dest")")-$(basename "$dest")
  (
    if ! partclone."$tool" -q -c $sum -s "$src" -O "$tmp.pcl" -L "$tmp.log" >"$tmp.out" 2>&1; then
      cat "$tmp.out" "$tmp.log" >&2
      echo "$0: failed: partclone.$tool -c -s $src" >&2
      exit 1
    fi
    store_image "$tmp.pcl" "$dest" "$format"
    rm -f "$tmp.pcl"
  ) &
  pids+=($!)
}
finish_captures() {
  local pid
  for pid in "${pids[@]}"; do
    wait "$pid"
  done
  pids=()
}

# dump DISK OUT: sfdisk -d with the device named /dev/sda, as captured on
# a machine.
dump() {
  (cd "$(dirname "$1")" && sfdisk -d "$(basename "$1")") |
    sed -e "s#^device: .*#device: /dev/sda#" -e "s#^$(basename "$1")\([0-9]\)#/dev/sda\1#" >"$2"
}

# place FS DISK START: copy a filesystem file into a disk file at a sector.
place() { dd if="$1" of="$2" bs=512 seek="$3" conv=notrunc status=none; }

# tree DIR NAME: a few files, one of them random and larger than 1 MiB.
tree() {
  mkdir -p "$1/etc" "$1/data"
  echo "$2" >"$1/etc/hostname"
  printf 'Captured by make-fog-images.sh for imgcast (%s).\n' "$2" >"$1/README.txt"
  seq 1 3000 | sed "s/^/$2 line /" >"$1/data/lines.txt"
  head -c $((2 * 1024 * 1024 + 333)) /dev/urandom >"$1/data/random.bin"
}

ntfs_fill() { # NTFS-FILE DIR: copy a tree's files into an NTFS file
  local f
  quiet ntfscp -f "$1" "$2/README.txt" README.txt
  quiet ntfscp -f "$1" "$2/data/random.bin" random.bin
  quiet ntfscp -f "$1" "$2/data/lines.txt" lines.txt
}

fat_fill() { MTOOLS_SKIP_CHECK=1 quiet mcopy -s -i "$1" "$2"/* ::/; }

# ---- type n: GPT, ext4 + swap + NTFS, shrunk as FOS does -----------------
n_dir=$work/fog-n
mkdir "$n_dir"
# 64 MiB disk: p1 ext4 24 MiB, p2 swap 8 MiB, p3 NTFS 24 MiB.
p1_start=2048 p1_size=49152
p2_start=51200 p2_size=16384
p3_start=67584 p3_size=49152
swap_uuid=2d8e5f41-9c3b-4a7e-8f10-6b5c4d3e2a19
tree "$work/n-root" fog-n-root
tree "$work/n-win" fog-n-windows
quiet mkfs.ext4 -q -F -E nodiscard -b 4096 -L fog-root -U 7f3e2a10-5b4c-4d6e-8a9b-0c1d2e3f4a5b \
  -d "$work/n-root" "$work/n-p1.fs" $((p1_size / 2))k
truncate -s $((p2_size * 512)) "$work/n-p2.swap"
quiet mkswap -U "$swap_uuid" -L fog-swap "$work/n-p2.swap"
truncate -s $((p3_size * 512)) "$work/n-p3.fs"
quiet mkntfs -F -Q -L Windows "$work/n-p3.fs"
ntfs_fill "$work/n-p3.fs" "$work/n-win"
disk=$work/n.raw
truncate -s 64M "$disk"
sfdisk -q "$disk" <<LAYOUT
label: gpt
label-id: 6A4F2C1E-3B5D-4E7F-9A8B-1C2D3E4F5A6B
first-lba: 2048
start=$p1_start, size=$p1_size, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=1E2D3C4B-5A69-4788-97A6-B5C4D3E2F101, name="root"
start=$p2_start, size=$p2_size, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, uuid=1E2D3C4B-5A69-4788-97A6-B5C4D3E2F102, name="swap"
start=$p3_start, size=$p3_size, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid=1E2D3C4B-5A69-4788-97A6-B5C4D3E2F103, name="windows"
LAYOUT
place "$work/n-p1.fs" "$disk" $p1_start
place "$work/n-p2.swap" "$disk" $p2_start
place "$work/n-p3.fs" "$disk" $p3_start
cp "$disk" "$work/fog-n.raw"

dump "$disk" "$n_dir/d1.partitions"
quiet sgdisk --backup="$n_dir/d1.mbr" "$disk"
# FOS: partitions without a resizable filesystem (here the swap) are fixed.
echo "2" >"$n_dir/d1.fixed_size_partitions"
echo "/dev/sda2 $swap_uuid" >"$n_dir/d1.original.swapuuids"
printf '/dev/sda1 extfs\n/dev/sda3 ntfs\n' >"$n_dir/d1.original.fstypes"

# Shrink ext4 to its minimum and give the partition 5% more (FOS's pct).
quiet e2fsck -fy "$work/n-p1.fs"
quiet resize2fs -M "$work/n-p1.fs"
blocks=$(dumpe2fs -h "$work/n-p1.fs" 2>/dev/null | awk '/^Block count:/{print $3}')
bsize=$(dumpe2fs -h "$work/n-p1.fs" 2>/dev/null | awk '/^Block size:/{print $3}')
fs_bytes=$((blocks * bsize))
p1_min=$(((fs_bytes + fs_bytes * 5 / 100 + 511) / 512))
truncate -s $((p1_min * 512)) "$work/n-p1.fs"
# Shrink NTFS to what ntfsresize allows plus 5%, in KiB as FOS asks.
min=$(ntfsresize -f -i "$work/n-p3.fs" 2>/dev/null | sed -n 's/.*might resize at \([0-9]*\) bytes.*/\1/p')
[[ -n $min ]] || { echo "$0: ntfsresize -i gave no minimum size" >&2; exit 1; }
kib=$(((min + min * 5 / 100 + 1023) / 1024))
printf "y\n" | quiet ntfsresize -f -s "${kib}k" "$work/n-p3.fs"
truncate -s $((kib * 1024)) "$work/n-p3.fs"
quiet ntfsfix -d "$work/n-p3.fs"
p3_min=$((kib * 2))
sed -e "s#^\(/dev/sda1 : start= *[0-9]*, size= *\)[0-9]*#\1$p1_min#" \
  -e "s#^\(/dev/sda3 : start= *[0-9]*, size= *\)[0-9]*#\1$p3_min#" \
  "$n_dir/d1.partitions" >"$n_dir/d1.minimum.partitions"
grep -q "size= *$p1_min," "$n_dir/d1.minimum.partitions" && grep -q "size= *$p3_min," "$n_dir/d1.minimum.partitions" ||
  { echo "$0: unexpected sfdisk dump:" >&2; cat "$n_dir/d1.partitions" >&2; exit 1; }
capture ext4 "$work/n-p1.fs" "$n_dir/d1p1.img" 5
capture ntfs "$work/n-p3.fs" "$n_dir/d1p3.img" 5

# ---- type mps: dos, ext4 + FAT16 + an empty extended partition -----------
mps_dir=$work/fog-mps
mkdir "$mps_dir"
# 48 MiB disk: p1 ext4 20 MiB (bootable), p2 FAT16 16 MiB, p3 extended 1 MiB.
tree "$work/mps-root" fog-mps-root
tree "$work/mps-fat" fog-mps-fat
quiet mkfs.ext4 -q -F -E nodiscard -b 1024 -L mps-root -U 3c2b1a09-8f7e-4d6c-9b5a-4a3b2c1d0e0f \
  -d "$work/mps-root" "$work/mps-p1.fs" 20480k
quiet mkfs.vfat -F 16 -n MPS-FAT -i 5E6F7A8B -C "$work/mps-p2.fs" 16384
fat_fill "$work/mps-p2.fs" "$work/mps-fat"
quiet fsck.vfat -n "$work/mps-p2.fs"
disk=$work/mps.raw
truncate -s 48M "$disk"
sfdisk -q "$disk" <<LAYOUT
label: dos
label-id: 0x2f1e0d3c
start=2048, size=40960, type=83, bootable
start=43008, size=32768, type=6
start=75776, size=2048, type=5
LAYOUT
place "$work/mps-p1.fs" "$disk" 2048
place "$work/mps-p2.fs" "$disk" 43008
cp "$disk" "$work/fog-mps.raw"
dump "$disk" "$mps_dir/d1.partitions"
dd if="$disk" of="$mps_dir/d1.mbr" bs=512 count=2048 status=none
dd if="$disk" of="$work/mps-p3.raw" bs=512 skip=75776 count=2048 status=none
capture ext4 "$work/mps-p1.fs" "$mps_dir/d1p1.img" 0
capture fat16 "$work/mps-p2.fs" "$mps_dir/d1p2.img" 0
capture imager "$work/mps-p3.raw" "$mps_dir/d1p3.img" 0

# ---- type dd: the mps disk as one partclone.imager stream ----------------
dd_dir=$work/fog-dd
mkdir "$dd_dir"
RENAME=0 capture imager "$work/fog-mps.raw" "$dd_dir/fog-dd" 5

# ---- type mpa: two disks, placed by dN.size -------------------------------
mpa_dir=$work/fog-mpa
mkdir "$mpa_dir"
tree "$work/mpa-1" fog-mpa-disk1
tree "$work/mpa-2" fog-mpa-disk2
quiet mkfs.ext4 -q -F -E nodiscard -b 4096 -L mpa-data -U 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d \
  -d "$work/mpa-1" "$work/mpa-1.fs" 32768k
quiet mkfs.vfat -F 16 -n MPA-FAT -i 1B2C3D4E -C "$work/mpa-2.fs" 16384
fat_fill "$work/mpa-2.fs" "$work/mpa-2"
d1=$work/mpa-d1.raw d2=$work/mpa-d2.raw
truncate -s 40M "$d1"
truncate -s 24M "$d2"
sfdisk -q "$d1" <<LAYOUT
label: gpt
label-id: 4D3C2B1A-6F5E-4A7B-8C9D-0E1F2A3B4C5D
first-lba: 2048
start=2048, size=65536, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=4D3C2B1A-6F5E-4A7B-8C9D-0E1F2A3B4C01, name="data"
LAYOUT
sfdisk -q "$d2" <<LAYOUT
label: dos
label-id: 0x7a6b5c4d
start=2048, size=32768, type=6
LAYOUT
place "$work/mpa-1.fs" "$d1" 2048
place "$work/mpa-2.fs" "$d2" 2048
cp "$d1" "$work/fog-mpa-d1.raw"
cp "$d2" "$work/fog-mpa-d2.raw"
dump "$d1" "$mpa_dir/d1.partitions"
dump "$d2" "$mpa_dir/d2.partitions"
quiet sgdisk --backup="$mpa_dir/d1.mbr" "$d1"
dd if="$d2" of="$mpa_dir/d2.mbr" bs=512 count=2048 status=none
echo -n "1:$(stat -c %s "$d1")" >"$mpa_dir/d1.size"
echo -n "2:$(stat -c %s "$d2")" >"$mpa_dir/d2.size"
capture ext4 "$work/mpa-1.fs" "$mpa_dir/d1p1.img" 6
capture fat16 "$work/mpa-2.fs" "$mpa_dir/d2p1.img" 6

# ---- publish ---------------------------------------------------------------
finish_captures
for name in fog-n fog-mps fog-mpa fog-dd; do
  chmod 0644 "$work/$name"/*
  rm -rf "${store:?}/$name"
  mv "$work/$name" "$store/$name"
done
for name in fog-n fog-mps fog-mpa-d1 fog-mpa-d2; do
  mv "$work/$name.raw" "$refdir/$name.raw"
done
# Last: the marker doubles as the Makefile's record of a complete build.
touch "$store/.mntcheck"
echo "FOG test images in $store: fog-n fog-mps fog-mpa fog-dd ($(cd "$store" && du -shc fog-n fog-mps fog-mpa fog-dd | tail -1 | cut -f1)); source disks in $refdir"
