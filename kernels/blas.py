"""Matrix products for the kernels: BLAS, except where a product is too small for it.

numba's np.dot computes c = a @ b only; an SGD step wants W <- beta W - lr (a.T @ dz) in
one pass over W, with no gradient buffer written and read back. scipy's BLAS (the one
np.dot uses) is reached through its Cython exports, registered as named symbols: compiled
code refers to them by name, so it stays cacheable.

A BLAS call costs about a microsecond before any arithmetic; a [2, 8, 8, 1] network's
whole step has less arithmetic than that. Products of at most SMALL_PRODUCT multiply-adds
therefore run as plain loops.
"""

import llvmlite.binding as llvm
import numpy as np
from numba import types
from numba.extending import get_cython_function_address

from .jit import kernel

_FORTRAN_GEMM = types.void(*([types.voidptr] * 13))


def gemm_address(name):
    """The address of the BLAS routine `name` ("sgemm", "dgemm") that the kernels call."""
    return get_cython_function_address("scipy.linalg.cython_blas", name)


for _name in ("sgemm", "dgemm"):
    llvm.add_symbol(f"nnserve_{_name}", gemm_address(_name))
_sgemm = types.ExternalFunction("nnserve_sgemm", _FORTRAN_GEMM)
_dgemm = types.ExternalFunction("nnserve_dgemm", _FORTRAN_GEMM)

_NO_TRANSPOSE = ord("N")
_TRANSPOSE = ord("T")

# Multiply-adds below which a loop beats a BLAS call's fixed cost.
SMALL_PRODUCT = 4096
# Rows of a from which copying a transposed b beats taking its columns as dot products
# (measured on [2, 8, 8, 1]'s products: at 32 rows 1.0 against 1.7 us, at 1 row 0.2 against
# 0.05: the copy's allocation).
ROWS_TO_COPY = 8


@kernel()
def matmul(a, b, out):
    """out <- a @ b, for C- or F-ordered views (a.T, W.T) as np.dot takes them."""
    n, k = a.shape
    m = b.shape[1]
    if n * k * m > SMALL_PRODUCT:
        np.dot(a, b, out)
        return
    transposed = b.strides[0] < b.strides[1]  # a view such as W.T: contiguous columns
    if m == 1 or (transposed and n < ROWS_TO_COPY):
        # Each entry a dot product of two contiguous runs. Its sum is a chain of dependent
        # adds, so this is for a single output column (the loop below would run a 1-long
        # inner loop per term) and for a transposed b of too few rows to copy.
        for i in range(n):
            for j in range(m):
                total = out.dtype.type(0)
                for p in range(k):
                    total += a[i, p] * b[p, j]
                out[i, j] = total
        return
    if transposed:
        # Copied (a few hundred elements at most): the loop below then runs along rows.
        b = np.ascontiguousarray(b)
    # Both forms add the terms in the same order (p = 0, 1, ...), so they give the same bits.
    out[:, :] = 0.0
    for i in range(n):
        for p in range(k):
            scale = a[i, p]
            for j in range(m):
                out[i, j] += scale * b[p, j]


@kernel()
def gemm_transposed_a(a, b, c, alpha, beta):
    """c <- alpha * a.T @ b + beta * c, for C-ordered a (k, m), b (k, n), c (m, n).

    BLAS is column-major: the row-major c is its c.T (n, m) = alpha * b.T @ a + beta * c.T,
    where b read column-major is b.T (n, k) untransposed and a read column-major is
    a.T (m, k), transposed back.
    """
    k, m = a.shape
    n = b.shape[1]
    if k * m * n <= SMALL_PRODUCT:
        # Row by row of c, each a sum of rows of b: the inner loop runs along rows of b and c
        # (contiguous), so it vectorizes; the sum over s was strided in both.
        for i in range(m):
            for j in range(n):
                c[i, j] *= beta
        for s in range(k):
            for i in range(m):
                scale = alpha * a[s, i]
                for j in range(n):
                    c[i, j] += scale * b[s, j]
        return
    sizes = np.empty(3, dtype=np.int32)
    sizes[0] = n
    sizes[1] = m
    sizes[2] = k
    scalars = np.empty(2, dtype=c.dtype)
    scalars[0] = alpha
    scalars[1] = beta
    flags = np.empty(2, dtype=np.uint8)
    flags[0] = _NO_TRANSPOSE
    flags[1] = _TRANSPOSE
    # Arguments: transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc (Fortran order).
    args = (flags[0:1].ctypes, flags[1:2].ctypes, sizes[0:1].ctypes, sizes[1:2].ctypes,
            sizes[2:3].ctypes, scalars[0:1].ctypes, b.ctypes, sizes[0:1].ctypes, a.ctypes,
            sizes[1:2].ctypes, scalars[1:2].ctypes, c.ctypes, sizes[0:1].ctypes)
    if c.itemsize == 4:
        _sgemm(*args)
    else:
        _dgemm(*args)
