#!/usr/bin/env bash
# The GPU check of issues #5 and #19, in two halves:
#
#   scripts/device-check.sh prepare   # here (no GPU needed): builds zfnet, the check binary and
#                                     # zfnet-bench with the `cuda` feature, strips and
#                                     # xz-compresses them, stages Fashion-MNIST — all under
#                                     # target/device (< 64 MiB, what the device tool carries)
#   scripts/device-check.sh run [PART ...]   # on the GPU machine; every part by default
#
# The parts, in order, each its own process under its own time limit (a GPU fault can abort a
# process, not the check), each ending with a line that says how it ended (done, FAILED with
# its exit status, or TIMED OUT):
#   parity    zfnet-device-check parity: the full ZF net against a float64 reference, fp32,
#             tf32, bf16 (CUDA_LAUNCH_BLOCKING=1, so that a kernel error names its launch;
#             the reference took 15 s for one precision on 2 CPU cores here)                 70 s
#   speed     zfnet-device-check speed: training step and inference at batch 128, 224x224    50 s
#   torch     scripts/torch_zf.py --only eager: PyTorch eager, the same net and step          60 s
#   train     zfnet-device-check train: a learning run of the full ZF net (STEPS, 200)       70 s
#   top9      zfnet-bench top9: the deconvnet's top-9 scan, full ZF net, tf32 and bf16  2 x 30 s
#   pipeline  zfnet run: a small pipeline end to end with `device: cuda`                    90 s
#   compiled  scripts/torch_zf.py --only compiled: torch.compile, last (it compiles for
#             minutes and can fail on its own)                                              120 s
# 520 s of limits in all: one command under the device tool's 600 s, and the rest of its 15
# minutes leaves a rerun of the parts that failed (`run parity speed`, say). The CUDA libraries
# are found first (scripts/cuda-libraries.sh: pip wheels in the Python environment when
# ldconfig lacks them), and RUST_LOG=cuda_backend=debug shows NVRTC's target, cuDNN's Find
# results and plans, and any refusal of the fused call.
#
# With the device library's `run` tool, after `prepare`:
#   command: bash scripts/device-check.sh run      carry: ["target/device"]
# Everything is printed and written to $OUT/device-check.md (device-check-rerun.md when parts
# are named; ./ without $OUT).
#
# A dry run without a GPU (crates/cuda-backend/tests/device_check_dry_run.rs) takes the
# binaries unpacked from DEVICE_CHECK_BINARIES and Fashion-MNIST from FASHION_MNIST_DIR
# instead of target/device: every part must fail fast, saying why, and the script must reach
# its end.
set -euo pipefail
cd "$(dirname "$0")/.."
device=target/device
# shellcheck source=scripts/cuda-libraries.sh
source scripts/cuda-libraries.sh

case "${1:-}" in
prepare)
    fashion_source=/usr/share/datasets/fashion-mnist
    if [[ ! -f "$fashion_source/train-images-idx3-ubyte.gz" ]]; then
        echo "prepare: Fashion-MNIST is not in $fashion_source: run \`make data\` first (it installs Debian's dataset-fashion-mnist)" >&2
        exit 2
    fi
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
        cp "$fashion_source/$name.gz" "$device/fashion/"
    done
    cp data/annotations/fashion-sneaker-parts.csv "$device/"
    du -sh "$device"
    ;;
run)
    shift
    all_parts="parity speed torch train top9 pipeline compiled"
    parts="${*:-$all_parts}"
    for wanted_part in $parts; do
        [[ " $all_parts " == *" $wanted_part "* ]] || { echo "unknown part \`$wanted_part\`: $all_parts" >&2; exit 2; }
    done
    report="${OUT:-.}/device-check$([[ "$parts" == "$all_parts" ]] || echo -rerun).md"
    export PYTHONUNBUFFERED=1 RUST_LOG="${RUST_LOG:-cuda_backend=debug}"
    root=$(pwd)
    work=$(mktemp -d)
    bin="$work/bin"
    mkdir -p "$bin"
    for binary in zfnet zfnet-device-check zfnet-bench; do
        if [[ -n "${DEVICE_CHECK_BINARIES:-}" ]]; then
            if [[ -x "$DEVICE_CHECK_BINARIES/$binary" ]]; then
                ln -s "$DEVICE_CHECK_BINARIES/$binary" "$bin/$binary"
            fi
        elif [[ -f "$device/bin/$binary.xz" ]]; then
            if command -v xz >/dev/null; then
                xz -dc "$device/bin/$binary.xz" > "$bin/$binary"
            else  # Python's lzma reads .xz too
                python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
                    "$device/bin/$binary.xz" "$bin/$binary"
            fi
            chmod +x "$bin/$binary"
        fi
    done
    fashion="$root/$device/fashion"
    if [[ ! -d "$fashion" ]]; then
        fashion="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
    fi
    for file in "$fashion"/*-ubyte.gz; do
        if [[ -f "$file" ]]; then
            gunzip -c "$file" > "$work/$(basename "$file" .gz)"
        fi
    done
    parts_csv="$root/data/annotations/fashion-sneaker-parts.csv"
    if [[ -f "$root/$device/fashion-sneaker-parts.csv" ]]; then
        parts_csv="$root/$device/fashion-sneaker-parts.csv"
    fi
    cat > "$work/pipeline.yaml" <<YAML
name: gpu
stages:
  - name: files
    kind: fashion_mnist
    inputs: { dir: $fashion }
    params: { split: train, classes: [0, 1, 2, 3, 5, 7] }
  - name: test_files
    kind: fashion_mnist
    inputs: { dir: $fashion }
    params: { split: test, classes: [0, 1, 2, 3, 5, 7] }
  - name: target_files
    kind: fashion_mnist
    inputs: { dir: $fashion }
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
    inputs: { model: train.model, images: test.images, parts: $parts_csv }
    params: { random_draws: 10, device: cuda }
YAML

    # part NAME LIMIT COMMAND...: runs one part in its own process under `timeout`, then says
    # how it ended. A missing binary is named at once, with what to do.
    part() {
        local name=$1 limit=$2 started=$SECONDS status=0
        shift 2
        echo
        echo "### $name (limit $limit s)"
        echo
        echo '```'
        if [[ "$1" == "$bin/"* && ! -x "$1" ]]; then
            echo "$name: FAILED: $(basename "$1") is missing; run \`scripts/device-check.sh prepare\` first"
            echo '```'
            return 0
        fi
        timeout --kill-after=5 "$limit" "$@" || status=$?
        case $status in
        0) echo "$name: done in $((SECONDS - started)) s" ;;
        124 | 137) echo "$name: TIMED OUT after $limit s" ;;
        *) echo "$name: FAILED with exit status $status after $((SECONDS - started)) s" ;;
        esac
        echo '```'
    }
    wanted() { [[ " $parts " == *" $1 "* ]]; }

    {
        echo "# zfnet device check, $(date -u +%Y-%m-%d), parts: $parts"
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
        echo
        echo "## CUDA libraries"
        echo
        echo '```'
        use_cuda_wheels python3 || true
        echo '```'
        if wanted parity; then
            CUDA_LAUNCH_BLOCKING=1 part parity 70 "$bin/zfnet-device-check" parity
        fi
        if wanted speed; then
            part speed 50 "$bin/zfnet-device-check" speed
        fi
        if wanted torch; then
            part "PyTorch eager" 60 python3 scripts/torch_zf.py --only eager --steps 20
        fi
        if wanted train; then
            part "learning run" 70 "$bin/zfnet-device-check" train --fashion "$work" --steps "${STEPS:-200}"
        fi
        if wanted top9; then
            for precision in cuda-tf32 cuda-bf16; do
                part "top-9 scan, $precision" 30 "$bin/zfnet-bench" top9 --device "$precision" --arch zf --images 2000
            done
        fi
        if wanted pipeline; then
            (cd "$work" && part "pipeline with device: cuda" 90 "$bin/zfnet" run)
        fi
        if wanted compiled; then
            part "PyTorch torch.compile" 120 python3 scripts/torch_zf.py --only compiled --steps 20
        fi
        echo
        echo "device check finished: parts $parts"
    } 2>&1 | tee "$report"
    ;;
*)
    echo "usage: $0 prepare | run [parity speed torch train top9 pipeline compiled]" >&2
    exit 2
    ;;
esac
