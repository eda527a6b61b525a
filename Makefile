# imgcast build, test and demo entry points. Every recipe runs under
# bash -euo pipefail, so a failing stage of a pipeline fails the target.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

GO ?= go
BUILD := build

.PHONY: build deps check test test-quick clean bench-restore bench-receiver initramfs FORCE

build:
	$(GO) build ./...

## deps: install Debian packages and Go modules the tests and the demo need.
deps:
	scripts/deps.sh

## check: formatting and vet.
check:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [[ -n $$unformatted ]]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

## test: everything, including the namespace and QEMU tests (needs root),
## with the race detector on. Packages run one at a time: the VM and network
## tests measure the same two cores and must not compete with each other.
test: deps check
	$(GO) test -race -p 1 -count=1 -timeout 80m ./...

## test-quick: unit tests only (skips namespace and VM tests).
test-quick: check
	IMGCAST_QUICK=1 $(GO) test -count=1 ./...

## bench-restore: imgcast restore-partition vs zstd -dc | partclone.restore on
## a 1 GiB ext4 image, alternating, plus restore-disk of the same image plain
## and signed (restore-disk -pubkey); prints the times, both ratios and the
## cost of manifest verification (not a test).
bench-restore:
	flock /tmp/imgcast-heavy.lock scripts/bench-restore.sh

## bench-receiver: udp-sender -> udpcast's udp-receiver vs ours, 512 MiB,
## alternating, 3 pairs; prints wall and CPU and the ratios (needs root).
bench-receiver:
	flock /tmp/imgcast-heavy.lock $(GO) run ./pkg/receiver/internal/bench $(BENCH_ARGS)

clean:
	rm -rf $(BUILD)

## initramfs: the client boot image build/initramfs.img (u-root userland +
## kernel modules + the firmware they ask for, concatenated cpio archives),
## the same without firmware (build/initramfs-nofirmware.img), and its
## kernel build/vmlinuz. Prints the sizes of both images and their parts.
## PUBKEY=NAME.pub builds a public key for signed images into it.
initramfs: $(BUILD)/initramfs.img $(BUILD)/initramfs-nofirmware.img $(BUILD)/vmlinuz
	@size() { stat -c %s "$$1"; }; mb() { awk -v b="$$1" 'BEGIN { printf "%.2f MB (%.2f MiB)", b/1e6, b/1048576 }'; }; \
	echo "initramfs: $(BUILD)/initramfs-nofirmware.img $$(mb $$(size $(BUILD)/initramfs-nofirmware.img)) without firmware:" \
	  "userland $$(mb $$(size $(BUILD)/userland.cpio.xz)), modules $$(mb $$(size $(BUILD)/modules.cpio.zst))"; \
	echo "initramfs: $(BUILD)/initramfs.img $$(mb $$(size $(BUILD)/initramfs.img)) with firmware $$(mb $$(size $(BUILD)/firmware.cpio));" \
	  "kernel $$(cat $(BUILD)/kver): $(BUILD)/vmlinuz $$(mb $$(size $(BUILD)/vmlinuz))"

# u-root commands in the image: the list lives in initramfs/tools.go.
UROOT_CMDS = $(shell sed -n 's|^[[:space:]]*_ "\(github.com/u-root/u-root/cmds/[^"]*\)"|\1|p' initramfs/tools.go)
IMAGE_CMDS := ./cmds/imgcast ./cmds/udp-receiver ./cmds/poweroff ./cmds/reboot
IMAGE_GO = $(shell find cmds pkg initramfs -name '*.go' -not -name '*_test.go') go.mod go.sum

# The guest kernel is Debian's linux-image-amd64 (installed here if missing).
# Its version comes from the package, never from uname -r: the build host may
# run another kernel. The file is rewritten only when the version changes.
$(BUILD)/kver: FORCE
	@mkdir -p $(BUILD)
	@if [[ "$$(dpkg-query -W -f='$${Status}' linux-image-amd64 2>/dev/null || true)" != *"install ok installed"* ]]; then \
	  echo "initramfs: installing linux-image-amd64"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-image-amd64; \
	fi
	@dep=$$(dpkg-query -W -f='$${Depends}' linux-image-amd64); kver=$${dep%% *}; kver=$${kver#linux-image-}; \
	if [[ ! -f /boot/vmlinuz-$$kver || ! -f /lib/modules/$$kver/modules.dep ]]; then \
	  echo "initramfs: linux-image-amd64 depends on '$$dep' but /boot/vmlinuz-$$kver or /lib/modules/$$kver is missing" >&2; exit 1; \
	fi; \
	if [[ ! -f $@ || $$(cat $@) != "$$kver" ]]; then echo "$$kver" > $@; fi

$(BUILD)/vmlinuz: $(BUILD)/kver
	cp /boot/vmlinuz-$$(cat $<) $@

# Modules, stored plain in one archive that the kernel decompresses itself
# at boot (zstd -19, its default 8 MiB window: the kernel's decoder needs a
# buffer of that size), and, separately, the firmware they ask for (each
# file xz-compressed, as the kernel's firmware loader reads it). Plain
# modules load with finit_module straight from the initramfs: no
# decompression in Go at load time (per-file xz made network-ready seconds
# slower under emulation), and one solid archive is smaller than per-file
# compression (3.13 MB against 3.19 MB as xz -9e files); the price is RAM:
# 16.9 MB unpacked instead of 3.4 MB.
$(BUILD)/modules.cpio $(BUILD)/firmware.cpio &: $(BUILD)/kver initramfs/modules.list $(wildcard initramfs/mkmodules/*.go pkg/kmod/*.go pkg/netup/diagnose.go)
	$(GO) run ./initramfs/mkmodules -kver $$(cat $(BUILD)/kver) -list initramfs/modules.list \
	  -compress none -o $(BUILD)/modules.cpio -firmware-out $(BUILD)/firmware.cpio

$(BUILD)/modules.cpio.zst: $(BUILD)/modules.cpio
	zstd -19 -T1 -q -c $< > $@.tmp
	mv $@.tmp $@

# Resizable FOG images (type n): after its data, each ext2/3/4 or NTFS
# filesystem is grown to its new partition with Debian's own tools
# (pkg/restore/growfs); u-root adds the shared libraries they need.
GROWFS_TOOLS := /usr/sbin/e2fsck /usr/sbin/resize2fs /usr/sbin/ntfsresize /usr/bin/ntfsfix
GROWFS_FILES = $(foreach tool,$(GROWFS_TOOLS),-files $(tool))

# -tags goshsmall: gosh reads lines through the kernel's tty line discipline
# instead of its full-screen editor, so the debug shell works on a serial
# console (serial-over-LAN) and can be driven by tests. GOAMD64=v1 keeps the
# image running on old CPUs and QEMU's default CPU model.
# -defaultsh="": no /bin/sh or /bin/defaultsh, so u-root's init has no shell
# to fall back to when the agent exits or crashes: init exits, the kernel
# panics and panic=-1 reboots. The agent starts gosh itself when a shell is
# wanted (debug mode, imgcast.after=shell, Enter after a failure).
# xz with the x86 BCJ filter: 13% smaller than zstd -19 for the Go binary.
$(BUILD)/userland.cpio.xz: $(IMAGE_GO) $(BUILD)/image.pub $(GROWFS_TOOLS)
	@mkdir -p $(BUILD)/bin
	$(GO) build -o $(BUILD)/bin/u-root github.com/u-root/u-root
	keyfiles=(); if [[ -s $(BUILD)/image.pub ]]; then keyfiles=(-files $(BUILD)/image.pub:etc/imgcast/image.pub); fi; \
	GOAMD64=v1 $(BUILD)/bin/u-root -o $(BUILD)/userland.cpio -tags goshsmall \
	  -uinitcmd=imgcast -defaultsh="" "$${keyfiles[@]}" $(GROWFS_FILES) $(UROOT_CMDS) $(IMAGE_CMDS)
	xz --check=crc32 --x86 --lzma2=preset=9e -T1 -q -c $(BUILD)/userland.cpio > $@.tmp
	rm $(BUILD)/userland.cpio
	mv $@.tmp $@

# make initramfs PUBKEY=NAME.pub (from imgcast keygen) builds the public key
# into the image at /etc/imgcast/image.pub: clients then require image folders
# signed with the matching NAME.key. Without PUBKEY the image has no key. The
# copy in $(BUILD) changes only when the key does, so the image is rebuilt
# exactly when the key changes.
PUBKEY ?=
$(BUILD)/image.pub: FORCE
	@mkdir -p $(BUILD)
	@if [[ -n "$(PUBKEY)" ]]; then \
	  if ! grep -qx 'imgcast-ed25519-public [A-Za-z0-9+/=]*' "$(PUBKEY)" || [[ $$(wc -l < "$(PUBKEY)") != 1 ]]; then \
	    echo "PUBKEY=$(PUBKEY) is not a public key written by imgcast keygen (NAME.pub)" >&2; exit 1; \
	  fi; \
	  cmp -s "$(PUBKEY)" $@ || cp "$(PUBKEY)" $@; \
	elif [[ ! -e $@ || -s $@ ]]; then : > $@; fi

# The kernel unpacks every archive of a concatenation, each compressed or
# not; an uncompressed one must start at a 4-byte aligned offset (the zero
# padding between archives is skipped).
$(BUILD)/initramfs-nofirmware.img: $(BUILD)/userland.cpio.xz $(BUILD)/modules.cpio.zst
	cp $(BUILD)/userland.cpio.xz $@.tmp
	truncate -s %4 $@.tmp
	cat $(BUILD)/modules.cpio.zst >> $@.tmp
	mv $@.tmp $@

$(BUILD)/initramfs.img: $(BUILD)/initramfs-nofirmware.img $(BUILD)/firmware.cpio
	cp $(BUILD)/initramfs-nofirmware.img $@.tmp
	truncate -s %4 $@.tmp
	cat $(BUILD)/firmware.cpio >> $@.tmp
	mv $@.tmp $@

FORCE:

# --- serving side (imgcast-server) and the default image -------------------
IMAGES := $(BUILD)/images
DEFAULT_IMAGE := $(IMAGES)/default
REFERENCE_DISK := $(BUILD)/reference/default.raw

.PHONY: server default-image demo

## demo: the main job. imgcast-server (driving udpcast's udp-sender) serves
## the default image; two QEMU machines (256 MiB each) PXE-boot from it, a
## BIOS one (iPXE ROM -> dnsmasq DHCP + TFTP -> boot.ipxe over HTTP) and a
## UEFI one (OVMF's own PXE -> ipxe.efi over TFTP -> the same), image
## themselves by multicast and power off; both disks are checked (cmp with
## the reference, fsck) and a summary is printed. Everything is torn down.
demo: deps initramfs server default-image
	IMGCAST_DEMO=1 $(GO) test -count=1 -timeout 20m -run '^TestDemo$$' -v ./qemu-tests/

## server: build the serving side into build/imgcast-server.
server:
	$(GO) build -o $(BUILD)/imgcast-server ./cmds/imgcast-server

## default-image: the demo's image as a FOG folder (build/images/default,
## served by `imgcast-server --images build/images`) and the raw disk it was
## captured from (build/reference/default.raw, outside the served folder).
default-image: $(DEFAULT_IMAGE)/d1.sha256

$(DEFAULT_IMAGE)/d1.sha256: scripts/make-default-image.sh
	scripts/make-default-image.sh $(DEFAULT_IMAGE) $(REFERENCE_DISK)

## fog-images: FOG test images captured as FOS does (types n, mps, mpa, dd;
## internal/fogimages) in a FOG image store build/fog/images (with its
## .mntcheck), and the disks they were captured from in build/fog/reference.
FOG_STORE := $(BUILD)/fog/images
.PHONY: fog-images
fog-images: $(FOG_STORE)/.mntcheck

$(FOG_STORE)/.mntcheck: scripts/make-fog-images.sh
	scripts/make-fog-images.sh $(FOG_STORE) $(BUILD)/fog/reference
