"""Compile-ahead and facts about the numeric runtime (which BLAS, how many threads)."""

import os
import time

import numba
import numpy as np


def warmup():
    """Compile (or load from numba's cache) every kernel variant; return seconds taken.

    Variants differ only by dtype: activations, losses and optimizers are runtime codes,
    so one tiny network per dtype reaches every compiled path.
    """
    from .network import Network

    started = time.perf_counter()
    x = np.zeros((2, 3))
    for dtype in ("float32", "float64"):
        network = Network([3, 4, 2], ["relu", "softmax"], "cross_entropy", dtype=dtype)
        xs = x.astype(dtype)
        network.train_step(xs, np.array([0, 1]))
        network.predict(xs)
        network.evaluate(xs, np.array([0, 1]))
        network.gradients(xs, np.array([0, 1]))
    return time.perf_counter() - started


def runtime_info():
    """Return a dict describing numba and the BLAS that the kernels' matmuls call.

    The kernels are compiled serial (no prange), so numba's threading layer is never
    started; BLAS threads carry the parallelism of the matmuls. `blas_threads` is the
    thread count of scipy's BLAS, the one numba's np.dot (and so every kernel) calls;
    `blas` lists every BLAS in the process (numpy brings its own).
    """
    info = {
        "numba_version": numba.__version__,
        "numpy_version": np.__version__,
        "threading_layer": "none (serial kernels; BLAS threads own the cores)",
        "blas_threads": None,
        "blas": [],
    }
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return info
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401 - numba's np.dot calls this BLAS

    scipy_root = os.path.dirname(os.path.dirname(scipy.__file__))
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            entry = {key: pool.get(key) for key in
                     ("internal_api", "filepath", "version", "num_threads", "architecture")}
            # scipy's wheels keep their OpenBLAS in site-packages/scipy.libs.
            entry["used_by_kernels"] = (entry["filepath"] or "").startswith(
                os.path.join(scipy_root, "scipy"))
            if entry["used_by_kernels"]:
                info["blas_threads"] = entry["num_threads"]
            info["blas"].append(entry)
    return info
