#!/usr/bin/env bash
# The GPU check of issue #5, in two halves:
#
#   scripts/device-check.sh prepare   # here (no GPU needed): builds zfnet, the check binary and
#                                     # zfnet-bench with the `cuda` feature, strips and
#                                     # xz-compresses them, stages Fashion-MNIST — all under
#                                     # target/device (< 64 MiB, what the device tool carries)
#   scripts/device-check.sh run       # on the GPU machine, in one go (~5 minutes):
#       1. zfnet-device-check: parity with the CPU backend (fp32, tf32, bf16), speed of the
#          training step and inference at batch 128 / 224x224, and a learning run of the full
#          ZF net
#       1b. zfnet-bench top9: the deconvnet's top-9 scan with the full ZF net (issue #6)
#       2. scripts/torch_zf.py: the identical network and step in PyTorch, same machine
#       3. a small pipeline end to end with `device: cuda`: dedup, train, deconv_top9,
#          feature_evolution, extract, occlusion, invariance, correspondence
#
# With the device library's `run` tool, after `prepare`:
#   command: bash scripts/device-check.sh run      carry: ["target/device"]
# Everything is printed and written to $OUT/device-check.md (./device-check.md without $OUT).
# STEPS (learning run, default 300) and TORCH_FLAGS (e.g. --no-compile) tune the time taken.
#
# Each part is its own process with its own time limit (a GPU fault can abort a process, not
# the check): parity (with CUDA_LAUNCH_BLOCKING=1, so that a kernel error names its launch),
# speed, the learning run, the top-9 scans, PyTorch, the pipeline; 490 s of limits in all,
# which leaves a rerun inside the device tool's 15 minutes. The CUDA libraries are found first
# (scripts/cuda-libraries.sh: pip wheels in the Python environment when ldconfig lacks them),
# and RUST_LOG=cuda_backend=debug shows cuDNN's algorithm and math-type choices.
set -euo pipefail
cd "$(dirname "$0")/.."
device=target/device
# shellcheck source=scripts/cuda-libraries.sh
source scripts/cuda-libraries.sh

case "${1:-}" in
prepare)
    cargo build --release -p zfnet --features cuda
    cargo build --release -p cuda-backend --features cuda --bin zfnet-device-check
    cargo build --release -p bench --features cuda --bin zfnet-bench
    rm -rf "$device/bin"
    mkdir -p "$device/bin" "$device/fashion"
    for binary in zfnet zfnet-device-check zfnet-bench; do
        strip -o "$device/bin/$binary" "target/release/$binary"
        xz -T0 -9 "$device/bin/$binary"
    done
    for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        cp "/usr/share/datasets/fashion-mnist/$name.gz" "$device/fashion/"
    done
    cp data/annotations/fashion-sneaker-parts.csv "$device/"
    du -sh "$device"
    ;;
run)
    report="${OUT:-.}/device-check.md"
    export PYTHONUNBUFFERED=1 RUST_LOG="${RUST_LOG:-cuda_backend=debug}"
    root=$(pwd)
    work=$(mktemp -d)
    bin="$work/bin"
    mkdir -p "$bin"
    for binary in zfnet zfnet-device-check zfnet-bench; do
        if command -v xz >/dev/null; then
            xz -dc "$device/bin/$binary.xz" > "$bin/$binary"
        else  # Python's lzma reads .xz too
            python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
                "$device/bin/$binary.xz" "$bin/$binary"
        fi
        chmod +x "$bin/$binary"
    done
    for file in "$device"/fashion/*.gz; do
        gunzip -c "$file" > "$work/$(basename "$file" .gz)"
    done
    cat > "$work/pipeline.yaml" <<YAML
name: gpu
stages:
  - name: files
    kind: fashion_mnist
    inputs: { dir: $root/$device/fashion }
    params: { split: train, classes: [0, 1, 2, 3, 5, 7] }
  - name: test_files
    kind: fashion_mnist
    inputs: { dir: $root/$device/fashion }
    params: { split: test, classes: [0, 1, 2, 3, 5, 7] }
  - name: target_files
    kind: fashion_mnist
    inputs: { dir: $root/$device/fashion }
    params: { split: test, classes: [4, 6, 8, 9] }
  - name: images
    kind: preprocess
    inputs: { images: files.images }
    params: { size: 32 }
  - name: test
    kind: preprocess
    inputs: { images: test_files.images }
    params: { size: 32 }
  - name: target
    kind: preprocess
    inputs: { images: target_files.images }
    params: { size: 32 }
  - name: mean
    kind: mean_image
    inputs: { images: images.images }
  - name: dedup
    kind: dedup
    inputs: { query: target.images, reference: images.images }
    params: { size: 32, threshold: 0.99, device: cuda }
  - name: train
    kind: train
    inputs: { train: images.images, val: test.images, mean: mean.mean, exclude: dedup.removal }
    params: { arch: zf_small, epochs: 2, init_std: 0.03, checkpoint_epochs: [1, 2], seed: 2013, device: cuda }
  - name: deconv
    kind: deconv_top9
    inputs: { model: train.model, images: test.images }
    params: { maps_per_layer: 9, device: cuda }
  - name: features
    kind: extract
    inputs: { model: train.model, images: target.images }
    params: { device: cuda }
  - name: evolution
    kind: feature_evolution
    inputs: { model: train.model, checkpoints: train.checkpoints, images: images.images }
    params: { maps_per_layer: 4, max_images: 6000, device: cuda }
  - name: occlusion
    kind: occlusion
    inputs: { model: train.model, images: test.images }
    params: { n_images: 5, occluder: 8, stride: 2, device: cuda }
  - name: invariance
    kind: invariance
    inputs: { model: train.model, images: test.images }
    params: { n_images: 5, device: cuda }
  - name: correspondence
    kind: correspondence
    inputs: { model: train.model, images: test.images, parts: $root/$device/fashion-sneaker-parts.csv }
    params: { random_draws: 10, device: cuda }
YAML
    {
        echo "# zfnet device check, $(date -u +%Y-%m-%d)"
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
        echo
        echo "## CUDA libraries"
        echo
        echo '```'
        use_cuda_wheels python3
        echo '```'
        echo
        echo '```'
        CUDA_LAUNCH_BLOCKING=1 timeout 50 "$bin/zfnet-device-check" parity \
            || echo "zfnet-device-check parity exited with $?"
        timeout 60 "$bin/zfnet-device-check" speed || echo "zfnet-device-check speed exited with $?"
        timeout 80 "$bin/zfnet-device-check" train --fashion "$work" --steps "${STEPS:-300}" \
            || echo "zfnet-device-check train exited with $?"
        echo '```'
        echo
        echo "## Top-9 scan of the full ZF net (issue #6)"
        echo
        for precision in cuda-tf32 cuda-bf16; do
            timeout 45 "$bin/zfnet-bench" top9 --device "$precision" --arch zf --images 2000 \
                || echo "zfnet-bench top9 exited with $?"
        done
        echo
        echo "## PyTorch, the same network and step"
        echo
        timeout 120 python3 scripts/torch_zf.py --steps 20 ${TORCH_FLAGS:-} || echo "torch_zf.py exited with $?"
        echo
        echo "## A pipeline with device: cuda"
        echo
        echo '```'
        (cd "$work" && time timeout 90 "$bin/zfnet" run) || echo "zfnet run exited with $?"
        echo '```'
    } 2>&1 | tee "$report"
    ;;
*)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
