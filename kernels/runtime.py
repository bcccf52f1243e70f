"""Compile-ahead and facts about the numeric runtime (which BLAS, how many threads)."""

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
    started; BLAS threads carry the parallelism of the matmuls.
    """
    info = {
        "numba_version": numba.__version__,
        "numpy_version": np.__version__,
        "threading_layer": "none (serial kernels; BLAS threads own the cores)",
        "blas": [],
    }
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return info
    import scipy.linalg.cython_blas  # noqa: F401 - numba's np.dot calls this BLAS

    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            info["blas"].append({key: pool.get(key) for key in
                                 ("internal_api", "filepath", "version", "num_threads",
                                  "architecture")})
    return info
