"""Pillow's side of `zfnet-bench preprocess`: the same decode + resize + centre crop.

Prints JSON: images/s in one process and in a multiprocessing pool (one process per core).
Resizes with BILINEAR (antialiased when downscaling), as zfnet does.
"""
import json
import multiprocessing
import os
import sys
import time

import numpy as np
import PIL
from PIL import Image


def load(path, size):
    image = Image.open(path).convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BILINEAR)
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size))).nbytes


def rate(function, paths):
    start = time.perf_counter()
    function(paths)
    return len(paths) / (time.perf_counter() - start)


def main():
    folder, size = sys.argv[1], int(sys.argv[2])
    paths = sorted(os.path.join(folder, name) for name in os.listdir(folder))
    one = lambda ps: [load(p, size) for p in ps]
    one(paths[:50])
    one_best = max(rate(one, paths) for _ in range(3))
    processes = os.cpu_count() or 1
    with multiprocessing.Pool(processes) as pool:
        many = lambda ps: pool.starmap(load, [(p, size) for p in ps], chunksize=16)
        many(paths[:50])
        pool_best = max(rate(many, paths) for _ in range(3))
    print(json.dumps({"version": PIL.__version__, "one_process_images_per_s": one_best,
                      "pool_images_per_s": pool_best, "processes": processes}))


if __name__ == "__main__":
    main()
