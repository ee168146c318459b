#!/usr/bin/env bash
# The GPU check of issue #5, in two halves:
#
#   scripts/device-check.sh prepare   # here (no GPU needed): builds the check binary with the
#                                     # `cuda` feature and stages Fashion-MNIST for the learning run
#   scripts/device-check.sh run       # on the GPU machine: parity, speed beside PyTorch, learning
#
# With the `run` tool of the device library, after `prepare`:
#   command: bash scripts/device-check.sh run
#   carry:   ["target/release/zfnet-device-check", "target/device-data"]
# The report is printed and written to $OUT/device-check.md (or device-check.md without $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
data=target/device-data
binary=target/release/zfnet-device-check

case "${1:-}" in
prepare)
    cargo build --release -p cuda-backend --features cuda --bin zfnet-device-check
    mkdir -p "$data"
    for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        cp "/usr/share/datasets/fashion-mnist/$name.gz" "$data/"
    done
    du -sh "$binary" "$data"
    ;;
run)
    report="${OUT:-.}/device-check.md"
    fashion=$(mktemp -d)
    for file in "$data"/*.gz; do
        gunzip -c "$file" > "$fashion/$(basename "$file" .gz)"
    done
    {
        echo "# zfnet device check, $(date -u +%Y-%m-%d)"
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
        echo
        echo '```'
        timeout 240 "$binary" all --fashion "$fashion" --steps "${STEPS:-300}" || echo "zfnet-device-check exited with $?"
        echo '```'
        echo
        echo "## PyTorch, the same network and step"
        echo
        timeout 200 python3 scripts/torch_zf.py --steps 20 ${TORCH_FLAGS:-} || echo "torch_zf.py exited with $?"
    } 2>&1 | tee "$report"
    ;;
*)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
