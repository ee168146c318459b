# zfnet's front door. Each target installs what it needs; logic lives in Rust.
#   make reproduce   run the default pipeline (Fashion-MNIST) end to end
#   make test        build and run every test (what CI runs)
#   make paper-mini  run pipelines/paper.yaml's own graph at 224 px on dataset miniatures
#   make bench       benchmarks against the named peers, side by side

CARGO ?= cargo
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: reproduce paper-mini test test-aarch64 bench build data test-deps bench-deps slurm-local clean

# The Slurm executor's tests run against a one-node cluster on this machine
# (scripts/slurm-local.sh: Debian's Slurm and MUNGE, configured in a private folder; /etc/slurm
# is left alone). `make test SLURM=0` skips starting it, and its tests then say SKIPPED.
SLURM ?= 1
SLURM_LOCAL_DIR ?= /tmp/zfnet-slurm-local
SLURM_ENV := $(if $(filter 1,$(SLURM)),SLURM_CONF=$(SLURM_LOCAL_DIR)/slurm.conf ZFNET_REQUIRE_SLURM=1)

# The CPU paths this machine runs besides its default (the smoke report must be the same on
# each: see crates/engine/src/cpu/path.rs). The portable path is tested on aarch64 by
# test-aarch64 (on x86-64 each of its fused multiply-adds is a C library call: ~5 minutes).
OTHER_CPU_PATHS := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && echo avx2)
AARCH64 := aarch64-unknown-linux-gnu
AARCH64_RUNNER := qemu-aarch64-static -L /usr/aarch64-linux-gnu

reproduce: data build
	./target/release/zfnet run --jobs 2
	./target/release/zfnet export --force report.report reports/default

# The paper's pipeline, unchanged, on miniatures of its datasets (pipelines/paper-mini.yaml
# says what the overlay changes: data roots and scale knobs only).
PAPER_MINI := -f pipelines/paper.yaml --overlay pipelines/paper-mini.yaml
paper-mini: data build
	$(CARGO) build --release -p miniatures
	./target/release/zfnet-miniatures --out data/paper-mini
	./target/release/zfnet $(PAPER_MINI) run --jobs 2
	./target/release/zfnet $(PAPER_MINI) export --force report.report reports/paper-mini

build:
	$(CARGO) build --release -p zfnet

# The GPU backend is built with its `cuda` feature too (cudarc loads the CUDA libraries at run
# time, so no toolkit is needed): its tests run the kernels on the CPU, the parity check on
# CPU backends, and a dry run of scripts/device-check.sh, and skip, saying so, what needs a GPU.
# (Building the one package resolves features apart from the workspace: before
# crates/workspace-hack, its shared dependencies built again, 4 min 30 s in a clean-clone
# `.ci/run` on 2026-12-03.)
# cargo-nextest, where installed, runs the test binaries side by side (the Slurm tests mostly
# wait on the cluster while the paper's miniature computes): on this 2-core machine, the same
# build, 2026-12-03, `cargo nextest run --workspace` took 281 s and `cargo test --workspace`
# 367 s (281 tests each). It does not run doc tests, so they run after it.
TEST_RUNNER := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo "nextest run --no-fail-fast" || echo test)

# Each cargo command below resolves the same dependency features (crates/workspace-hack; its test
# lists these commands: keep the two together), so the dependencies are compiled once.
test: test-deps data $(if $(filter 1,$(SLURM)),slurm-local)
	$(CARGO) build -p zfnet
	$(SLURM_ENV) $(CARGO) $(TEST_RUNNER) --workspace
	$(if $(findstring nextest,$(TEST_RUNNER)),$(CARGO) test --workspace --doc)
	$(CARGO) $(TEST_RUNNER) -p cuda-backend --features cuda
	for path in $(OTHER_CPU_PATHS); do \
		ZFNET_CPU=$$path $(CARGO) test -p tests --test smoke_pipeline || exit 1; \
	done

# The engine's kernel tests and the every-machine digest (crates/engine/tests/paths.rs),
# cross-built for aarch64 and run under qemu: the NEON (portable) path, bit for bit.
test-aarch64:
	@command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64-static >/dev/null || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static; }
	rustup target add $(AARCH64)
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$(AARCH64_RUNNER)" \
	ZFNET_TEST_RUNNER="$(AARCH64_RUNNER)" \
		$(CARGO) test -p engine --no-default-features --target $(AARCH64) --lib --test paths
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$(AARCH64_RUNNER)" \
		$(CARGO) test -p linear-models --target $(AARCH64) --lib

slurm-local:
	ZFNET_SLURM_DIR=$(SLURM_LOCAL_DIR) scripts/slurm-local.sh start

bench: bench-deps
	$(CARGO) build --release -p bench -p cpuid-mask
	./target/release/zfnet-bench

data: $(FASHION_MNIST)

$(FASHION_MNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

test-deps:
	@command -v g++ >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq g++; }
	@$(PYTHON) -c "import pyarrow, sklearn" 2>/dev/null || \
		$(PYTHON) -m pip install --quiet -r scripts/requirements-test.txt

bench-deps:
	@$(PYTHON) -c "import numpy, PIL, onnxruntime, onnx, sklearn" 2>/dev/null || \
		$(PYTHON) -m pip install --quiet -r scripts/requirements-bench.txt

clean:
	rm -rf .zfnet
