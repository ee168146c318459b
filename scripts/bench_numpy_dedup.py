"""numpy's side of `zfnet-bench dedup`: the same blocked correlation, pairs at or above 0.99.

Usage: bench_numpy_dedup.py N_QUERIES N_REFERENCES DIM BLOCK QUERIES.f32 REFERENCES.f32
"""
import json
import sys
import time

import numpy as np

from blas_kernels import blas_kernels, sees_avx512


def main():
    n_queries, n_references, dim, block = (int(a) for a in sys.argv[1:5])
    # The very vectors zfnet used, from the files it wrote.
    queries = np.fromfile(sys.argv[5], dtype="<f4").reshape(n_queries, dim)
    references = np.fromfile(sys.argv[6], dtype="<f4").reshape(n_references, dim)

    def run():
        found = 0
        for start in range(0, n_references, block):
            scores = queries @ references[start : start + block].T
            found += int(np.count_nonzero(scores >= 0.99))
        return found

    found = run()
    best = min(_timed(run) for _ in range(3))
    config = np.show_config(mode="dicts") if hasattr(np, "show_config") else {}
    blas = config.get("Build Dependencies", {}).get("blas", {}).get("name", "?") if isinstance(config, dict) else "?"
    print(json.dumps({"version": np.__version__, "blas": blas, "kernels": blas_kernels(),
                      "seconds": best, "found": found,
                      "sees_avx512": sees_avx512()}))


def _timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
