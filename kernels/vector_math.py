"""tanh and exp of one float, written so that a loop over them vectorizes.

libm's tanhf and expf are calls per element that no loop around them can vectorize (this
llvmlite has no SVML). For float32 both are computed here from polynomials: branch-free
(clamps are selects) and call-free, so LLVM turns the activation loops into wide vector
code. Every comparison is false for nan, so nan passes through (the divergence guard
counts on non-finite values propagating). float64 keeps libm: its reference tests compare
trajectories to 1e-10. Measured accuracy and speed: docs/design.md, tests/test_vector_math.py.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

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


def tanh(x):
    """tanh(x): float32 by a rational approximation (at most 6 ulp), others by libm."""
    return np.tanh(x)


def exp(x):
    """exp(x): float32 by Cephes' expf (within 1 ulp, and 0 and inf where libm gives them),
    others by libm."""
    return np.exp(x)


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bits are the int32 `bits` (a free bitcast)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@overload(tanh)
def _tanh(x):
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
