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
  [setpriv]=util-linux
  [qemu-system-x86_64]=qemu-system-x86
  [qemu-img]=qemu-utils
  [/usr/lib/ipxe/qemu/efi-virtio.rom]=ipxe-qemu
  [/usr/share/OVMF/OVMF_CODE_4M.fd]=ovmf
  [/usr/lib/ipxe/ipxe.efi]=ipxe
  [dnsmasq]=dnsmasq-base
  [cpio]=cpio
  [xz]=xz-utils
  [lz4]=lz4
  [bzip2]=bzip2
  [blkid]=util-linux
  [ntfsls]=ntfs-3g
  [curl]=curl
  [modinfo]=kmod
  [ping]=iputils-ping
  [sysctl]=procps
  [cmp]=diffutils
  # NFSv3 server for the FOG tests (internal/nfsserver), and a user-space
  # NFS client for host-side checks (the test kernel has no NFS client)
  [ganesha.nfsd]=nfs-ganesha
  [/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so]=nfs-ganesha-vfs
  [rpcbind]=rpcbind
  [rpcinfo]=rpcbind
  [nfs-cat]=libnfs-utils
  [unshare]=util-linux
  [losetup]=mount
  # go test -race needs cgo: a C compiler and the C library's headers
  [gcc]=gcc
  [/usr/include/stdio.h]=libc6-dev
)

# Firmware the initramfs's NIC drivers ask for (mkmodules ships exactly the
# files they name): Debian keeps it in the non-free-firmware component.
# The file each package must provide -> the package. Only drivers in
# initramfs/modules.list: one added there that needs firmware (bnx2x: the
# package firmware-bnx2x) needs its package here too.
declare -A firmware=(
  [/lib/firmware/rtl_nic/rtl8168h-2.fw]=firmware-realtek
  [/lib/firmware/bnx2/bnx2-mips-09-6.2.1b.fw]=firmware-bnx2
  [/lib/firmware/tigon/tg3_tso5.bin]=firmware-misc-nonfree
)

# enable_non_free_firmware adds Debian's non-free-firmware component to
# every Debian entry of apt's sources (deb822 .sources files and one-line
# sources.list files), once; it changes nothing on other distributions.
enable_non_free_firmware() {
  [[ -f /etc/debian_version ]] || return 0
  local f changed=0
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    if [[ $f == *.sources ]]; then
      grep -Eq '^URIs:.*/debian(-security)?/?$' "$f" || continue
      grep -Eq '^Components:.*non-free-firmware' "$f" && continue
      sed -i -E '/^Components:/{/non-free-firmware/!s/$/ non-free-firmware/}' "$f"
    else
      grep -Eq '^deb .*/debian(-security)?/? [^ ]+ .*main' "$f" || continue
      grep -Eq '^deb .*/debian(-security)?/? [^ ]+ .*non-free-firmware' "$f" && continue
      sed -i -E '/^deb .*\/debian(-security)?\/? /{/non-free-firmware/!s/$/ non-free-firmware/}' "$f"
    fi
    echo "deps: added non-free-firmware to $f"
    changed=1
  done
  if ((changed)); then apt-get update -qq; fi
}

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

missing_firmware=()
for file in "${!firmware[@]}"; do
  [[ -e $file || -e $file.xz || -e $file.zst ]] || missing_firmware+=("${firmware[$file]}")
done
if ((${#missing_firmware[@]})) && [[ -f /etc/debian_version ]]; then
  [[ $(id -u) -eq 0 ]] || { echo "deps: need root to install ${missing_firmware[*]}" >&2; exit 1; }
  enable_non_free_firmware
  missing+=("${missing_firmware[@]}")
fi

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
