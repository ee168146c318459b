"""The kernel family OpenBLAS chose in this process (e.g. SkylakeX, Haswell; OPENBLAS_CORETYPE
forces one), for the numpy peers of `zfnet-bench`."""


def blas_kernels():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "?"
    return ", ".join(sorted({str(i.get("architecture", "?")) for i in threadpool_info()
                             if i.get("user_api") == "blas"})) or "?"


def sees_avx512():
    """Whether this process's CPUID reports AVX-512F (numpy's own detection): false under
    `zfnet-bench`'s libcpuid_mask.so, which hides it so that peers run AVX2 kernels."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return bool(core._multiarray_umath.__cpu_features__.get("AVX512F", False))
