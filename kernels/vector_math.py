"""tanh and exp of one float, written so that a loop over them vectorizes.

libm's tanh and exp are calls per element that no loop around them can vectorize (this
llvmlite has no SVML). Here both are computed from polynomials, for float32 and float64:
branch-free (clamps and branches are selects) and call-free, so LLVM turns the activation
loops into wide vector code. Every comparison is false for nan, so nan passes through (the
divergence guard counts on non-finite values propagating). Other types fall back to
numpy's functions. Measured accuracy and speed: docs/design.md, tests/test_vector_math.py.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .jit import kernel

__all__ = ["exp", "tanh"]

_ONE = np.float32(1.0)

# tanh: Eigen's 13/6 rational approximation (also TensorFlow's and ONNX Runtime's).
_TANH_CLAMP = np.float32(9.0)  # beyond it tanh rounds to +-1 in float32
_TANH_TINY = np.float32(4e-4)  # below it tanh(x) rounds to x
_TANH_P = tuple(np.float32(c) for c in (  # x * P(x^2), from the x^13 coefficient down
    -2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
    1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03))
_TANH_Q = tuple(np.float32(c) for c in (  # Q(x^2), from the x^6 coefficient down
    1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03))

# exp: Cephes' expf. x = n ln2 + r with |r| <= ln2/2 (ln2 in two parts, so r is exact),
# exp(r) by a degree-7 polynomial, times 2^n as two powers of two built in the float's
# exponent bits (2^n alone leaves the exponent's range where exp overflows to inf or
# underflows to a subnormal or 0; the second multiplication rounds there, as libm does).
_EXP_HIGH = np.float32(89.0)  # exp(89) overflows float32: inf
_EXP_LOW = np.float32(-104.0)  # exp(-104) rounds to 0 in float32
_LOG2E = np.float32(1.44269504088896341)
_LN2_HIGH = np.float32(0.693359375)
_LN2_LOW = np.float32(-2.12194440e-4)
_HALF = np.float32(0.5)
_EXP_P = tuple(np.float32(c) for c in (  # from the r^7 coefficient down to r^2
    1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
    5.0000001201e-1))
_EXPONENT_BIAS = np.int32(127)
_MANTISSA_BITS = np.int32(23)

# float64: Cephes' exp (a Pade form in r^2) and tanh (a 3/3 rational form below 0.625,
# 1 - 2 / (exp(2|x|) + 1) above it). Both within 2 ulp of libm's, measured.
_EXP64_HIGH = 710.0  # exp above overflows float64: inf
_EXP64_LOW = -746.0  # exp below rounds to 0
_LOG2E64 = 1.4426950408889634073599
_LN2_HIGH64 = 6.93145751953125e-1
_LN2_LOW64 = 1.42860682030941723212e-6
_EXP64_P = (1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1)
_EXP64_Q = (3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.27265548208155028766e-1,
            2.00000000000000000009e0)
_TANH64_SMALL = 0.625  # below: the rational form; above: through exp
_TANH64_TINY = 1e-9  # below it tanh(x) rounds to x (and keeps the sign of -0.0)
_TANH64_CLAMP = 40.0  # beyond it tanh rounds to +-1 in float64
_TANH64_P = (-9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3)
_TANH64_Q = (1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3)


def tanh(x):
    """tanh(x): float32 within 6.03 ulp of the exact value (measured over every 97th float32
    in [-12, 12]), float64 within 2 ulp of libm's."""
    return np.tanh(x)


def exp(x):
    """exp(x): float32 within 1 ulp of the exact value, float64 within 2 ulp of libm's; 0,
    inf and nan where libm gives them."""
    return np.exp(x)


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bits are the int32 `bits` (a free bitcast)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def _float64_from_bits(typingctx, bits):
    """The float64 whose IEEE-754 bits are the int64 `bits` (a free bitcast)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@kernel()
def _exp_float64(x):
    """Cephes' exp of a float64 already clamped to [_EXP64_LOW, _EXP64_HIGH] (or nan)."""
    p0, p1, p2 = _EXP64_P
    q0, q1, q2, q3 = _EXP64_Q
    n = np.floor(x * _LOG2E64 + 0.5)
    r = x - n * _LN2_HIGH64 - n * _LN2_LOW64
    r2 = r * r
    pr = r * ((p0 * r2 + p1) * r2 + p2)
    y = 1.0 + 2.0 * (pr / (((q0 * r2 + q1) * r2 + q2) * r2 + q3 - pr))
    half = np.int64(n) >> 1  # n in [-1077, 1025]: each half within the exponent's range
    rest = np.int64(n) - half
    y *= _float64_from_bits((half + 1023) << 52)
    y *= _float64_from_bits((rest + 1023) << 52)
    # nan: its int64 conversion loses it; the sum restores it.
    return y + (x - x)


@overload(tanh)
def _tanh(x):
    if x == types.float64:
        return _tanh_float64
    if x != types.float32:
        return lambda x: np.tanh(x)
    p13, p11, p9, p7, p5, p3, p1 = _TANH_P
    q6, q4, q2, q0 = _TANH_Q

    def tanh_float32(x):
        clamped = _TANH_CLAMP if x > _TANH_CLAMP else x
        clamped = -_TANH_CLAMP if clamped < -_TANH_CLAMP else clamped
        x2 = clamped * clamped
        p = ((((((p13 * x2 + p11) * x2 + p9) * x2 + p7) * x2 + p5) * x2 + p3) * x2 + p1) * clamped
        q = ((q6 * x2 + q4) * x2 + q2) * x2 + q0
        ratio = p / q
        # Near +-9 the ratio can pass 1 by an ulp; tanh never does.
        ratio = _ONE if ratio > _ONE else ratio
        ratio = -_ONE if ratio < -_ONE else ratio
        return x if abs(x) < _TANH_TINY else ratio

    return tanh_float32


@overload(exp)
def _exp(x):
    if x == types.float64:
        return _clamped_exp_float64
    if x != types.float32:
        return lambda x: np.exp(x)
    p7, p6, p5, p4, p3, p2 = _EXP_P

    def exp_float32(x):
        clamped = _EXP_HIGH if x > _EXP_HIGH else x
        clamped = _EXP_LOW if clamped < _EXP_LOW else clamped
        n = np.floor(clamped * _LOG2E + _HALF)
        r = clamped - n * _LN2_HIGH - n * _LN2_LOW
        y = (((((p7 * r + p6) * r + p5) * r + p4) * r + p3) * r + p2) * r * r + r + _ONE
        half = np.int32(n) >> 1  # n in [-150, 129]: each half within the exponent's range
        rest = np.int32(n) - half
        y *= _float32_from_bits((half + _EXPONENT_BIAS) << _MANTISSA_BITS)
        y *= _float32_from_bits((rest + _EXPONENT_BIAS) << _MANTISSA_BITS)
        # nan: the clamps keep it, but its int32 conversion does not; the sum restores it.
        return y + (clamped - clamped)

    return exp_float32


def _clamped_exp_float64(x):
    clamped = _EXP64_HIGH if x > _EXP64_HIGH else x
    clamped = _EXP64_LOW if clamped < _EXP64_LOW else clamped
    return _exp_float64(clamped)


def _tanh_float64(x):
    p0, p1, p2 = _TANH64_P
    q0, q1, q2 = _TANH64_Q
    size = abs(x)
    x2 = x * x
    small = x + x * x2 * (((p0 * x2 + p1) * x2 + p2) / (((x2 + q0) * x2 + q1) * x2 + q2))
    clamped = _TANH64_CLAMP if size > _TANH64_CLAMP else size  # nan stays nan
    large = 1.0 - 2.0 / (_exp_float64(2.0 * clamped) + 1.0)
    large = large if x >= 0 else -large
    if size < _TANH64_TINY:
        return x
    return small if size <= _TANH64_SMALL else large
