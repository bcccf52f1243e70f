"""Shared pieces of the client SDK tests: a real server on 127.0.0.1:0 and sample data."""

import contextlib

import numpy as np

from service_support import running_server

__all__ = ["batches", "live_server", "same_arrays"]


@contextlib.contextmanager
def live_server(**settings):
    """Yield a started server (service_support.Running) on a free loopback port, kernels warm."""
    from nnserve.model import warmup

    warmup()
    with running_server(**settings) as running:
        yield running


def batches(seed, count, n_samples, n_in, n_classes, dtype=np.float32):
    """`count` (x, y) batches: x (n_samples, n_in) of dtype, y class ids (n_samples,) int64."""
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(n_samples, n_in)).astype(dtype),
             rng.integers(0, n_classes, size=n_samples).astype(np.int64)) for _ in range(count)]


def same_arrays(left, right):
    """True when two arrays have the same shape, dtype and bytes (bit for bit, NaN included)."""
    left, right = np.asarray(left), np.asarray(right)
    return (left.shape == right.shape and left.dtype == right.dtype
            and left.tobytes() == right.tobytes())
