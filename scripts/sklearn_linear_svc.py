"""scikit-learn's side of the linear-SVM comparisons (issue #8): LinearSVC, the liblinear
dual coordinate-descent solver, on exactly the features zfnet's solver saw.

Usage: sklearn_linear_svc.py DIR DIM C TOL JOBS [ORDERS]
DIR holds x_train.f64, y_train.i64, x_test.f64, y_test.i64 (raw little-endian, row-major; the
feature rows already L2-normalised with a trailing bias column of 1, so no intercept is fit).
Prints JSON: version, seconds (fit), accuracy (mean of per-class accuracies on the test rows).
JOBS > 1 fits the one-vs-rest problems in parallel with OneVsRestClassifier.
liblinear visits the samples in a random order, which moves the accuracy by about a point
on hard problems: ORDERS (default 1) fits with random_state 0 .. ORDERS-1 and reports the
mean accuracy (and the fastest fit), so that a comparison does not hang on one order.
"""
import json
import os
import sys
import time

import numpy as np
import sklearn
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC


def load(folder, name, dtype, dim=None):
    values = np.fromfile(os.path.join(folder, name), dtype=dtype)
    return values.reshape(-1, dim) if dim else values


def main():
    folder, dim, c, tol, jobs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    orders = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    x_train = load(folder, "x_train.f64", "<f8", dim)
    y_train = load(folder, "y_train.i64", "<i8")
    x_test = load(folder, "x_test.f64", "<f8", dim)
    y_test = load(folder, "y_test.i64", "<i8")
    accuracies, times = [], []
    for order in range(orders):
        svc = LinearSVC(C=c, loss="hinge", dual=True, tol=tol, fit_intercept=False, max_iter=1000, random_state=order)
        model = OneVsRestClassifier(svc, n_jobs=jobs) if jobs > 1 else svc
        start = time.perf_counter()
        model.fit(x_train, y_train)
        times.append(time.perf_counter() - start)
        predicted = model.predict(x_test)
        per_class = [np.mean(predicted[y_test == k] == k) for k in np.unique(y_test)]
        accuracies.append(float(np.mean(per_class)))
    print(json.dumps({"version": sklearn.__version__, "seconds": min(times), "accuracy": float(np.mean(accuracies)), "accuracies": accuracies}))


if __name__ == "__main__":
    main()
