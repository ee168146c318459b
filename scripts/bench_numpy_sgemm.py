"""The SGEMM rate a CPU path can reach, for `zfnet-bench engine`: OpenBLAS (through numpy) f32
1024^3 on all cores, best of 5. When our AVX2 path is forced on an AVX-512 machine, `zfnet-bench`
hides AVX-512 from this process (libcpuid_mask.so), so that the figure is for the same vector
width.

Usage: bench_numpy_sgemm.py  (prints one JSON line)
"""
import json
import time

import numpy as np

from blas_kernels import blas_kernels, sees_avx512


def main():
    n = 1024
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    print(json.dumps({"gflops": 2.0 * n**3 / best / 1e9, "kernels": blas_kernels(),
                      "sees_avx512": sees_avx512()}))


if __name__ == "__main__":
    main()
