"""The numba options every kernel compiles with, in one place."""

from numba import njit

__all__ = ["kernel"]


def kernel(**options):
    """numba.njit for a kernel: releases the GIL, cached on disk, numpy's error model.

    error_model="numpy": a float division by zero gives inf or nan, as in numpy, instead
    of raising ZeroDivisionError. Python's model puts a zero test and a raise in front of
    every division, and that branch keeps LLVM from vectorizing the loop around it: Adam's
    update and the softmax and tanh loops ran scalar (measured: docs/design.md). Nothing
    here divides by a value that can be zero except where the result is checked for
    finiteness anyway (the divergence guard).
    """
    return njit(nogil=True, cache=True, error_model="numpy", **options)
