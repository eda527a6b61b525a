#!/usr/bin/env bash
# deps.sh installs everything the build, the tests and the demo need on a
# fresh Debian machine: the Debian packages (only when something is missing,
# so a warm machine pays nothing) and the Go modules.
set -euo pipefail

# command-or-file -> Debian package that provides it
declare -A want=(
  [udp-sender]=udpcast
  [nft]=nftables
  [ip]=iproute2
  [partclone.restore]=partclone
  [mkfs.ext4]=e2fsprogs
  [mkfs.vfat]=dosfstools
  [mcopy]=mtools
  [mkntfs]=ntfs-3g
  [zstd]=zstd
  [pigz]=pigz
  [sfdisk]=fdisk
  [sgdisk]=gdisk
  [e2fsck]=e2fsprogs
  [fsck.vfat]=dosfstools
  [ntfsfix]=ntfs-3g
  [ntfsresize]=ntfs-3g
  [ntfscat]=ntfs-3g
  [ntfsinfo]=ntfs-3g
  [resize2fs]=e2fsprogs
  [debugfs]=e2fsprogs
  [mkswap]=util-linux
  [swaplabel]=util-linux
  [blkid]=util-linux
  [losetup]=mount
  [flock]=util-linux
  [qemu-system-x86_64]=qemu-system-x86
  [qemu-img]=qemu-utils
  [/usr/lib/ipxe/qemu/efi-virtio.rom]=ipxe-qemu
  [dnsmasq]=dnsmasq-base
  [cpio]=cpio
  [xz]=xz-utils
  [curl]=curl
  [modinfo]=kmod
  [ping]=iputils-ping
  [sysctl]=procps
  [cmp]=diffutils
  [losetup]=mount
)

missing=()
for thing in "${!want[@]}"; do
  if [[ $thing == /* ]]; then
    [[ -e $thing ]] || missing+=("${want[$thing]}")
  else
    command -v "$thing" >/dev/null 2>&1 || [[ -x /usr/sbin/$thing || -x /sbin/$thing ]] || missing+=("${want[$thing]}")
  fi
done
# The guest kernel: Debian's linux-image-amd64 meta-package.
dpkg-query -W -f='${Status}' linux-image-amd64 2>/dev/null | grep -q 'install ok installed' || missing+=(linux-image-amd64)

if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "deps: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps: need root to install Debian packages: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

go mod download
