"""Compile-ahead and facts about the numeric runtime (which BLAS, how many threads)."""

import ctypes
import mmap
import os
import threading
import time

import numba
import numpy as np


# The priming product, C (m x n) = A (m x k) B (k x n) in BLAS's column-major terms: A is
# packed in blocks of up to P x Q, and m >= 2P, k >= 2Q pack a whole one (param.h: P <= 640
# and Q <= 448 in float32 for OpenBLAS's Haswell, Zen, SkylakeX, Cooperlake and Sapphire
# Rapids kernels).
_PRIMING_SHAPE = (2048, 1024, 64)  # m, k, n
_primed_callers = 0
_priming = threading.Lock()


def _zeros(count):
    """float32 zeros in an anonymous mapping of their own. From malloc, freeing them would
    raise glibc's mmap threshold to their size, and later request buffers up to that size
    would stay in its heaps (+15 MiB after a batch-256 load, measured); and untouched pages
    read as the shared zero page."""
    return np.frombuffer(mmap.mmap(-1, count * 4), np.float32)


def prime_blas(callers=1):
    """Run one large float32 product in each of `callers` BLAS buffers, once per process.

    Measured with scipy's OpenBLAS 0.3.30 (Haswell kernels, a 2-core AMD EPYC VM): each
    call computes in one of OpenBLAS's packing buffers (the first free one: concurrent
    callers take different ones), 32 MB mapped untouched. Until a product has packed a
    large block in it, the pages past what a product writes are not present, and a
    one-thread sgemm in that buffer runs at a third of its speed: 256 x 784 x 256 at 11.6
    GFLOP/s against 36 once the pages are present (madvise(MADV_POPULATE_WRITE) on the
    buffer does the same); the [784, 256, 256, 10] batch-256 predict 12.1 ms of CPU, 4.1
    after. dgemm ran at the same speed either way. So the server primes as many buffers
    as it has threads computing at once (its calls are one-thread, `--threads 1`).

    The callers run the product at once, each inside BLAS while the others take their
    buffers: through ctypes, which releases the GIL (scipy's Python `sgemm` holds it, so
    its callers would share one buffer), calling the kernels' own sgemm (gemm_address).
    A primed buffer holds ~480 KiB resident; no product's bits change.
    """
    global _primed_callers
    with _priming:
        if callers <= _primed_callers:
            return
        from nnserve.kernels.blas import gemm_address

        sgemm = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * 13))(gemm_address("sgemm"))
        m, k, n = _PRIMING_SHAPE
        a, b = _zeros(m * k), _zeros(k * n)
        # Fortran arguments, all by pointer: transa, transb, m, n, k, alpha, A, lda, B, ldb,
        # beta, C, ldc.
        values = [ctypes.c_char(b"N"), ctypes.c_int(m), ctypes.c_int(n), ctypes.c_int(k),
                  ctypes.c_float(1), ctypes.c_float(0)]
        no_transpose, rows, columns, inner, one, zero = map(ctypes.addressof, values)
        together = threading.Barrier(callers)

        def prime():
            out = _zeros(m * n)
            try:
                together.wait()
            except threading.BrokenBarrierError:
                return  # a thread could not be started: prime_blas raises that
            sgemm(no_transpose, no_transpose, rows, columns, inner, one, a.ctypes.data, rows,
                  b.ctypes.data, inner, zero, out.ctypes.data, rows)

        started = []
        try:
            for _ in range(callers):
                thread = threading.Thread(target=prime, name="nnserve-prime-blas")
                thread.start()
                started.append(thread)
        except BaseException:
            together.abort()
            raise
        finally:
            for thread in started:
                thread.join()
        _primed_callers = callers


def warmup(callers=1):
    """Compile (or load from numba's cache) every kernel variant and prime BLAS for
    `callers` concurrent callers (prime_blas); return seconds taken.

    Variants differ only by dtype: activations, losses and optimizers are runtime codes,
    so one tiny network per dtype reaches every compiled path.
    """
    from .network import Network

    started = time.perf_counter()
    prime_blas(callers)
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
