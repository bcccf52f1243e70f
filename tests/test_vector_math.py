"""tanh and exp are polynomial approximations (kernels/vector_math.py): their error, measured
against float64 (for float32) and libm (for float64), and their edges."""

import math

import numpy as np

from nnserve.kernels.codes import SIGMOID, SOFTMAX, TANH
from nnserve.kernels.layers import activate


def _activate(activation, values, dtype=np.float32):
    z = np.ascontiguousarray(values, dtype=dtype).reshape(1, -1)
    out = np.empty_like(z)
    activate(z, activation, out)
    return out.ravel()


def _kernel_tanh(values):
    return _activate(TANH, values)


def _float32_grid(high, stride):
    """Every stride-th float32 from 0 to high, and their negatives."""
    positive = np.arange(0, np.float32(high).view(np.uint32), stride, dtype=np.uint32).view(np.float32)
    return np.concatenate([positive, -positive])


def _ulps(got, exact):
    """|got - exact| in units of the float32 spacing at exact."""
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / spacing


def test_float32_tanh_is_within_8_ulp_of_the_exact_value():
    # Every 997th float32 from 0 to 12 (about a million values, tiny and subnormal ones
    # included) and their negatives, against tanh in float64 rounded to nothing.
    x = _float32_grid(12, 997)
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


def test_float32_sigmoid_is_within_3_ulp_of_the_exact_value():
    # exp's error and two roundings (1 + e, the division): libm's expf gives the same bound.
    x = _float32_grid(100, 389)
    exact = 1 / (1 + np.exp(-x.astype(np.float64)))
    got = _activate(SIGMOID, x)
    normal = exact >= np.finfo(np.float32).tiny
    errors = _ulps(got[normal], exact[normal])
    assert errors.max() <= 3, (errors.max(), x[normal][errors.argmax()])
    # Below float32's normal range: within one subnormal step, 0 where exact rounds to 0.
    assert np.abs(got[~normal] - exact[~normal]).max() <= np.spacing(np.float32(0))


def test_float32_softmax_is_within_4_ulp_and_sums_to_one():
    rows = np.random.default_rng(2).standard_normal((2000, 10)).astype(np.float32) * 8
    out = np.empty_like(rows)
    activate(rows, SOFTMAX, out)
    # Exact from the float32 differences z - max the kernel forms (their rounding is the
    # input's, not exp's: exp(-20 + 1e-6) is off by 8 ulp whatever computes it).
    shifted = (rows - rows.max(axis=1, keepdims=True)).astype(np.float64)
    exact = np.exp(shifted)
    exact /= exact.sum(axis=1, keepdims=True)
    big = exact >= np.finfo(np.float32).tiny
    assert _ulps(out[big], exact[big]).max() <= 4
    assert np.abs(out.sum(axis=1, dtype=np.float64) - 1).max() < 1e-6


def test_float32_exp_edges_follow_libm():
    """Through sigmoid's exp(-|z|): overflow and underflow of exp give sigmoid's exact ends,
    nan passes through, and an infinite input gives 0 or 1."""
    z = np.array([0, 88, 89, 104, 200, -88, -89, -104, -200, np.inf, -np.inf, np.nan], np.float32)
    got = _activate(SIGMOID, z)
    assert got[0] == 0.5
    assert np.all(got[1:5] == 1) and got[9] == 1
    assert np.all(got[7:9] == 0) and got[10] == 0
    assert 0 < got[5] < 1e-38 and 0 <= got[6] < got[5]
    assert np.isnan(got[11])


def _ulps64(got, reference):
    return np.abs(got - reference) / np.spacing(np.abs(reference))


def _float64_sample():
    rng = np.random.default_rng(4)
    return np.concatenate([rng.uniform(-40, 40, 300_000), rng.uniform(-1, 1, 300_000),
                           rng.uniform(-1e-6, 1e-6, 10_000)])


def test_float64_tanh_is_within_2_ulp_of_libm():
    x = _float64_sample()
    reference = np.array([math.tanh(value) for value in x])
    nonzero = reference != 0
    errors = _ulps64(_activate(TANH, x, np.float64)[nonzero], reference[nonzero])
    assert errors.max() <= 2, (errors.max(), x[nonzero][errors.argmax()])
    assert errors.mean() < 0.5


def test_float64_sigmoid_is_within_3_ulp_of_libm():
    x = np.concatenate([_float64_sample(), np.random.default_rng(5).uniform(-740, 740, 100_000)])
    reference = np.array([1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))
                          for v in x])
    normal = reference >= np.finfo(np.float64).tiny
    got = _activate(SIGMOID, x, np.float64)
    assert _ulps64(got[normal], reference[normal]).max() <= 3
    assert np.abs(got[~normal] - reference[~normal]).max() <= np.spacing(0.0)


def test_float64_edges_follow_libm():
    x = np.array([0.0, -0.0, 1e-300, 50.0, -50.0, 800.0, -800.0, np.inf, -np.inf, np.nan])
    tanh = _activate(TANH, x, np.float64)
    assert np.array_equal(tanh[:7], [math.tanh(v) for v in x[:7]])
    assert np.signbit(tanh[1]) and tanh[7] == 1 and tanh[8] == -1 and np.isnan(tanh[9])
    sigmoid = _activate(SIGMOID, x, np.float64)
    assert sigmoid[0] == 0.5 and sigmoid[5] == 1 and sigmoid[6] == 0
    assert sigmoid[7] == 1 and sigmoid[8] == 0 and np.isnan(sigmoid[9])
