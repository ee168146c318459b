"""PyTorch's side of the GPU benchmark (issue #5): the identical ZF net (Fig. 3), trained with
the identical step (SGD, momentum 0.9, weight decay 5e-4, batch 128, 224x224, 1000 classes),
timed with CUDA events. Prints a markdown table (and JSON lines with --json).

Usage: python3 scripts/torch_zf.py [--steps N] [--only eager|compiled] [--no-compile]
scripts/device-check.sh runs the eager configurations (fp32, tf32, bf16) early and the
torch.compile ones as its last part, in a separate process (compiling takes minutes and may
fail on its own). Without PyTorch or without a CUDA device it says so and exits with 2.
The LRN matches zfnet's: b = a / (k + alpha * sum a^2)^beta with k=2, size 5, alpha=1e-4,
beta=0.75 (PyTorch divides alpha by the size, so it gets 5e-4). Pools are 3x3 stride 2 in
ceil mode (110 -> 55, 26 -> 13, 13 -> 6).
"""
import argparse
import json
import sys

try:
    import torch
    import torch.nn as nn
except ImportError as error:
    print(f"torch_zf.py: PyTorch is not installed in this Python ({sys.executable}): {error}",
          file=sys.stderr)
    sys.exit(2)


def zf_net(classes=1000):
    return nn.Sequential(
        nn.Conv2d(3, 96, 7, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True), nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0),
        nn.Conv2d(96, 256, 5, stride=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True), nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True), nn.Flatten(),
        nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, classes),
    )


def timed(function, steps):
    for _ in range(3):
        function()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        function()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / steps


def run(mode, compiled, steps, batch=128):
    tf32 = mode != "fp32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    model = zf_net().cuda()
    fmt = torch.channels_last if compiled else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device="cuda")
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    net = torch.compile(model) if compiled else model

    def train_step():
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=(mode == "bf16")):
            loss = loss_fn(net(x), y)
        loss.backward()
        optimiser.step()

    def infer():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=(mode == "bf16")):
            net(x)

    torch.cuda.reset_peak_memory_stats()
    train_ms = timed(train_step, steps)
    model.eval()
    infer_ms = timed(infer, steps)
    return {
        "implementation": f"PyTorch {torch.__version__} {'compiled' if compiled else 'eager'} {mode}",
        "train_ms": train_ms,
        "infer_ms": infer_ms,
        "memory_gb": torch.cuda.max_memory_allocated() / 1e9,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--only", choices=["eager", "compiled"])
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"torch_zf.py: PyTorch {torch.__version__} sees no CUDA device", file=sys.stderr)
        sys.exit(2)
    configs = []
    if args.only != "compiled":
        configs += [("fp32", False), ("tf32", False), ("bf16", False)]
    if args.only != "eager" and not args.no_compile:
        configs += [("tf32", True), ("bf16", True)]
    print(f"device: {torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}")
    print("| implementation | train ms/step | train img/s | inference ms | inference img/s | GPU memory GB |")
    print("|---|---|---|---|---|---|")
    for mode, compiled in configs:
        r = run(mode, compiled, args.steps)
        print(f"| {r['implementation']} | {r['train_ms']:.2f} | {128000 / r['train_ms']:.0f} | "
              f"{r['infer_ms']:.2f} | {128000 / r['infer_ms']:.0f} | {r['memory_gb']:.1f} |", flush=True)
        if args.json:
            print(json.dumps(r))


if __name__ == "__main__":
    main()
