"""The kernel family OpenBLAS chose in this process (e.g. SkylakeX, Haswell; OPENBLAS_CORETYPE
forces one), for the numpy peers of `zfnet-bench`."""


def blas_kernels():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "?"
    return ", ".join(sorted({str(i.get("architecture", "?")) for i in threadpool_info()
                             if i.get("user_api") == "blas"})) or "?"
