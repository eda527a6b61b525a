# imgcast build, test and demo entry points. Every recipe runs under
# bash -euo pipefail, so a failing stage of a pipeline fails the target.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

GO ?= go
BUILD := build

.PHONY: build deps check test test-quick clean bench-restore bench-receiver

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

## test: everything, including the namespace and QEMU tests (needs root).
## Packages run one at a time: the VM and network tests measure the same two
## cores and must not compete with each other.
test: deps check
	$(GO) test -p 1 -count=1 -timeout 80m ./...

## test-quick: unit tests only (skips namespace and VM tests).
test-quick: check
	IMGCAST_QUICK=1 $(GO) test -count=1 ./...

## bench-restore: imgcast restore-partition vs zstd -dc | partclone.restore on
## a 1 GiB ext4 image, alternating; prints both and the ratio (not a test).
bench-restore:
	flock /tmp/imgcast-heavy.lock scripts/bench-restore.sh

## bench-receiver: udp-sender -> udpcast's udp-receiver vs ours, 512 MiB,
## alternating, 3 pairs; prints wall and CPU and the ratios (needs root).
bench-receiver:
	flock /tmp/imgcast-heavy.lock $(GO) run ./pkg/receiver/internal/bench $(BENCH_ARGS)

clean:
	rm -rf $(BUILD)

# --- serving side (imgcast-server) and the default image -------------------
IMAGES := $(BUILD)/images
DEFAULT_IMAGE := $(IMAGES)/default
REFERENCE_DISK := $(BUILD)/reference/default.raw

.PHONY: server default-image

## server: build the serving side into build/imgcast-server.
server:
	$(GO) build -o $(BUILD)/imgcast-server ./cmds/imgcast-server

## default-image: the demo's image as a FOG folder (build/images/default,
## served by `imgcast-server --images build/images`) and the raw disk it was
## captured from (build/reference/default.raw, outside the served folder).
default-image: $(DEFAULT_IMAGE)/d1.sha256

$(DEFAULT_IMAGE)/d1.sha256: scripts/make-default-image.sh
	scripts/make-default-image.sh $(DEFAULT_IMAGE) $(REFERENCE_DISK)
