"""tanh in float32 is a rational approximation (kernels/layers.py): its error, measured."""

import math

import numpy as np

from nnserve.kernels.codes import TANH
from nnserve.kernels.layers import activate


def _kernel_tanh(values):
    z = np.ascontiguousarray(values, dtype=np.float32).reshape(1, -1)
    out = np.empty_like(z)
    activate(z, TANH, out)
    return out.ravel()


def _ulps(got, exact):
    """|got - exact| in units of the float32 spacing at exact."""
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / spacing


def test_float32_tanh_is_within_8_ulp_of_the_exact_value():
    # Every 997th float32 from 0 to 12 (about a million values, tiny and subnormal ones
    # included) and their negatives, against tanh in float64 rounded to nothing.
    positive = np.arange(0, np.float32(12).view(np.uint32), 997, dtype=np.uint32).view(np.float32)
    x = np.concatenate([positive, -positive])
    errors = _ulps(_kernel_tanh(x), np.tanh(x.astype(np.float64)))
    assert errors.max() <= 8, (errors.max(), x[errors.argmax()])
    assert errors.mean() < 0.25


def test_float32_tanh_is_odd_bounded_and_exact_at_the_ends():
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32) * 4
    got = _kernel_tanh(x)
    assert np.array_equal(_kernel_tanh(-x), -got)
    assert np.all(np.abs(got) <= 1)
    tiny = np.array([0.0, -0.0, 1e-30, -3e-4, np.float32(1e-45)], np.float32)
    assert np.array_equal(_kernel_tanh(tiny), tiny)
    assert np.array_equal(_kernel_tanh(np.array([9, 20, 1e30, np.inf], np.float32)), np.ones(4, np.float32))
    assert np.isnan(_kernel_tanh(np.array([np.nan], np.float32))).all()


def test_float64_tanh_is_libm_tanh():
    x = np.random.default_rng(1).standard_normal(10_000) * 4
    z, out = x.reshape(1, -1).copy(), np.empty((1, x.size))
    activate(z, TANH, out)
    assert np.array_equal(out.ravel(), [math.tanh(value) for value in x])  # math.tanh: libm
