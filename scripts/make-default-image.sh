#!/usr/bin/env bash
# make-default-image.sh OUTDIR REFERENCE
#
# Builds imgcast's default image: a small GPT disk with an ext4 and a FAT32
# partition, captured the way FOG stores images, into the image folder
# OUTDIR, and keeps the raw disk it was captured from as REFERENCE (to cmp
# a restored disk against; keep it outside the folder the server serves).
#
#   d1.partitions   sfdisk -d of the disk (device names as /dev/sda)
#   d1.mbr          sgdisk --backup of the GPT (what FOG keeps for GPT disks)
#   d1p1.img        partclone.ext4 image (CRC32 checksums), zstd-compressed
#   d1p2.img        partclone.fat32 image (-a0, no checksums, as FOG captures), gzip (pigz)
#   d1.sha256       sha256sum of the files above
#
# No loop devices or mounts: the filesystems are made in files and copied
# into the disk file at their partition offsets. The folder appears only
# when complete (built next to it, then renamed).
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 OUTDIR REFERENCE" >&2
  exit 2
fi
out=$1
reference=$2
export PATH=$PATH:/usr/sbin:/sbin
for tool in sfdisk sgdisk mkfs.ext4 e2fsck mkfs.vfat fsck.vfat mcopy partclone.ext4 partclone.fat32 zstd pigz sha256sum; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is missing; run scripts/deps.sh" >&2; exit 1; }
done

mkdir -p "$(dirname "$out")" "$(dirname "$reference")"
work=$(mktemp -d "$(dirname "$out")/.default-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# quiet runs a command with its chatter in a log that is shown only if it
# fails.
quiet() {
  if ! "$@" >"$work/last.log" 2>&1; then
    cat "$work/last.log" >&2
    echo "$0: failed: $*" >&2
    return 1
  fi
}

# Layout, in 512-byte sectors: 1 MiB alignment, ext4 40 MiB, FAT32 36 MiB,
# 80 MiB disk (the backup GPT takes the last 33 sectors).
disk_mib=80
p1_start=2048 p1_size=81920
p2_start=83968 p2_size=73728

# Filesystem contents: a few small files and some incompressible data, so
# the transfer moves real bytes.
root=$work/root-ext4
mkdir -p "$root/etc" "$root/data/docs"
echo imgcast-default >"$root/etc/hostname"
printf 'This disk was imaged by imgcast.\nPartition 1: ext4. Partition 2: FAT32.\n' >"$root/README.txt"
for i in 1 2 3; do
  seq 1 $((i * 2000)) | sed "s/^/line /" >"$root/data/docs/file$i.txt"
done
head -c $((3 * 1024 * 1024 + 4321)) /dev/urandom >"$root/data/random.bin"
ln -s ../README.txt "$root/data/readme-link"

efi=$work/root-fat
mkdir -p "$efi/EFI/BOOT"
printf 'imgcast default image, FAT32 partition\r\n' >"$efi/EFI/BOOT/README.TXT"
head -c $((1024 * 1024 + 77)) /dev/urandom >"$efi/RANDOM.BIN"

quiet mkfs.ext4 -q -F -E nodiscard -b 4096 -L imgcast-root -U 6a0c3a8e-5b4e-4c55-9f2e-0d2f1c9e7a11 \
  -d "$root" "$work/p1.fs" $((p1_size / 2))k
quiet e2fsck -fn "$work/p1.fs"
quiet mkfs.vfat -F 32 -s 1 -n IMGCAST-EFI -i 1A2B3C4D -C "$work/p2.fs" $((p2_size / 2))
MTOOLS_SKIP_CHECK=1 quiet mcopy -s -i "$work/p2.fs" "$efi"/* ::/
quiet fsck.vfat -n "$work/p2.fs"

disk=$work/sda
truncate -s ${disk_mib}M "$disk"
sfdisk -q "$disk" <<LAYOUT
label: gpt
label-id: 3B8E4C2A-1D5F-4E6A-9C7B-8A0F2E1D3C4B
first-lba: 2048
start=$p1_start, size=$p1_size, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=0B6E3F1A-2C4D-4E5F-8A9B-1C2D3E4F5A6B, name="imgcast-root"
start=$p2_start, size=$p2_size, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=7D1E2F3A-4B5C-4D6E-9F0A-1B2C3D4E5F6A, name="imgcast-efi"
LAYOUT
dd if="$work/p1.fs" of="$disk" bs=512 seek=$p1_start conv=notrunc status=none
dd if="$work/p2.fs" of="$disk" bs=512 seek=$p2_start conv=notrunc status=none

img=$work/image
mkdir "$img"
(cd "$work" && sfdisk -d sda) |
  sed -e 's#^device: sda$#device: /dev/sda#' -e 's#^sda\([0-9]\)#/dev/sda\1#' >"$img/d1.partitions"
grep -q '^/dev/sda2 : start= *83968' "$img/d1.partitions" || { echo "$0: unexpected sfdisk dump:" >&2; cat "$img/d1.partitions" >&2; exit 1; }
quiet sgdisk --backup="$img/d1.mbr" "$disk"
[[ -s $img/d1.mbr ]] || { echo "$0: sgdisk wrote no GPT backup" >&2; exit 1; }

quiet partclone.ext4 -q -c -s "$work/p1.fs" -O "$work/p1.pcl" -L "$work/p1.log"
quiet partclone.fat32 -q -c -a0 -s "$work/p2.fs" -O "$work/p2.pcl" -L "$work/p2.log"
zstd -q -3 "$work/p1.pcl" -o "$img/d1p1.img"
pigz -c "$work/p2.pcl" >"$img/d1p2.img"
chmod 0644 "$img"/*
(cd "$img" && sha256sum d1.partitions d1.mbr d1p1.img d1p2.img >d1.sha256)

rm -rf "$out"
mv "$img" "$out"
mv "$disk" "$reference"
echo "default image: $out ($(du -sh "$out" | cut -f1)), reference disk: $reference"
