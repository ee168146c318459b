"""numpy's side of `zfnet-bench gram`: the Gram matrix x @ x.T of the same f64 rows (BLAS dgemm,
every core), compared entry by entry with zfnet's.

Usage: bench_numpy_gram.py N WIDTH ROWS.f64 OURS.f64
"""
import json
import sys
import time

import numpy as np


def main():
    n, width = (int(a) for a in sys.argv[1:3])
    rows = np.fromfile(sys.argv[3], dtype="<f8").reshape(n, width)
    ours = np.fromfile(sys.argv[4], dtype="<f8").reshape(n, n)
    gram = rows @ rows.T
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        gram = rows @ rows.T
        best = min(best, time.perf_counter() - start)
    upper = np.triu_indices(n)
    difference = float(np.max(np.abs(gram[upper] - ours[upper])))
    print(json.dumps({"version": np.__version__, "seconds": best, "max_abs_difference": difference}))


if __name__ == "__main__":
    main()
