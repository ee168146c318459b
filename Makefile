# zfnet's front door. Each target installs what it needs; logic lives in Rust.
#   make reproduce   run the default pipeline (Fashion-MNIST) end to end
#   make test        build and run every test (what CI runs)
#   make bench       benchmarks against the named peers, side by side

CARGO ?= cargo
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: reproduce test bench build data test-deps bench-deps clean

reproduce: data build
	./target/release/zfnet run --jobs 2
	./target/release/zfnet export --force report.report reports/default

build:
	$(CARGO) build --release -p zfnet

test: test-deps
	$(CARGO) build -p zfnet
	$(CARGO) test --workspace

bench: bench-deps
	$(CARGO) build --release -p bench
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
