"""One dense layer's elementwise work: bias, activation, activation derivative.

The matmuls around these (`z = x @ W`, `dW = x.T @ dz`, `dx = dz @ W.T`) stay on BLAS;
these loops are serial on purpose: with BLAS threads owning the cores, a parallel
elementwise region only adds launch cost and contention (see docs/design.md).
"""

import numpy as np
from numba import types
from numba.extending import overload

from .codes import IDENTITY, LEAKY_RELU, LEAKY_RELU_SLOPE, RELU, SIGMOID, SOFTMAX, TANH
from .jit import kernel

# tanh for float32: Eigen's 13/6 rational approximation, as TensorFlow and ONNX Runtime use.
# libm's tanhf is a call per element that no loop around it can vectorize (this llvmlite has
# no SVML): it took 2.2 of the 4.0 ms of a batch-256 train step of a [784, 256, 256, 10]
# tanh network. The rational form vectorizes. Measured against tanh in float64 over every
# 97th float32 in [-10, 10]: at most 6 ulp (absolute 3.6e-7, near +-1), 0.12 ulp on average
# (numpy's float32 tanh: 1.4 and 0.04). float64 keeps libm's tanh: its reference tests ask 1e-10.
_TANH_CLAMP = np.float32(9.0)  # beyond it tanh rounds to +-1 in float32
_TANH_TINY = np.float32(4e-4)  # below it tanh(x) rounds to x
_ONE = np.float32(1.0)
_TANH_P = tuple(np.float32(c) for c in (  # x * P(x^2), from the x^13 coefficient down
    -2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
    1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03))
_TANH_Q = tuple(np.float32(c) for c in (  # Q(x^2), from the x^6 coefficient down
    1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03))


def tanh(x):
    """tanh of one float: a vectorizable rational approximation for float32, libm otherwise."""
    return np.tanh(x)


@overload(tanh, inline="always")
def _tanh(x):
    if x != types.float32:
        return lambda x: np.tanh(x)
    p13, p11, p9, p7, p5, p3, p1 = _TANH_P
    q6, q4, q2, q0 = _TANH_Q

    def tanh_float32(x):
        # Each comparison is false for nan, which so passes through (the guard counts on it).
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


@kernel(inline="always")
def sigmoid(z, one):
    # Two branches so exp never overflows. `one` is 1 in z's dtype: a float literal would
    # turn float32 arithmetic into float64 (2x slower exp, conversions, no wide vectors).
    if z >= 0:
        return one / (one + np.exp(-z))
    e = np.exp(z)
    return e / (one + e)


@kernel(inline="always")
def _constants(array):
    """0, 1 and the leaky-relu slope in the array's dtype (see sigmoid)."""
    kind = array.dtype.type
    return kind(0), kind(1), kind(LEAKY_RELU_SLOPE)


@kernel()
def add_bias(z, biases):
    n_samples, n_out = z.shape
    for i in range(n_samples):
        for j in range(n_out):
            z[i, j] += biases[j]


@kernel()
def activate(z, activation, out):
    """out = f(z), row by row; `out` may be `z` itself."""
    n_samples, n_out = z.shape
    zero, one, slope = _constants(z)
    if activation == IDENTITY:
        out[:, :] = z
    elif activation == SIGMOID:
        for i in range(n_samples):
            for j in range(n_out):
                out[i, j] = sigmoid(z[i, j], one)
    elif activation == TANH:
        for i in range(n_samples):
            for j in range(n_out):
                out[i, j] = tanh(z[i, j])
    elif activation == RELU:
        for i in range(n_samples):
            for j in range(n_out):
                v = z[i, j]
                out[i, j] = v if v > 0 else zero
    elif activation == LEAKY_RELU:
        for i in range(n_samples):
            for j in range(n_out):
                v = z[i, j]
                out[i, j] = v if v > 0 else slope * v
    elif activation == SOFTMAX:
        for i in range(n_samples):
            # Subtracting the row maximum keeps exp in range (stable softmax).
            peak = z[i, 0]
            for j in range(1, n_out):
                peak = max(peak, z[i, j])
            total = 0.0
            for j in range(n_out):
                e = np.exp(z[i, j] - peak)
                out[i, j] = e
                total += e
            for j in range(n_out):
                out[i, j] /= total


@kernel()
def hidden_activate(z, biases, activation, squares):
    """z <- f(z + b) for a hidden layer (its pre-activation is not kept), one pass.

    In the same pass, squares[j] += sum_i a[i, j]^2: the squared column norms the
    divergence guard bounds gradients with (a non-finite value makes its sum non-finite).
    """
    # One loop per activation: with the choice inside the loop, LLVM computes the sigmoid's
    # exp for every element and selects (measured 50x slower for relu).
    n_samples, n_out = z.shape
    zero, one, slope = _constants(z)
    if activation == SIGMOID:
        for i in range(n_samples):
            for j in range(n_out):
                z[i, j] = sigmoid(z[i, j] + biases[j], one)
                squares[j] += z[i, j] * z[i, j]
    elif activation == TANH:
        for i in range(n_samples):
            for j in range(n_out):
                z[i, j] = tanh(z[i, j] + biases[j])
                squares[j] += z[i, j] * z[i, j]
    elif activation == RELU:
        for i in range(n_samples):
            for j in range(n_out):
                v = z[i, j] + biases[j]
                z[i, j] = v if v > 0 else zero
                squares[j] += z[i, j] * z[i, j]
    elif activation == LEAKY_RELU:
        for i in range(n_samples):
            for j in range(n_out):
                v = z[i, j] + biases[j]
                z[i, j] = v if v > 0 else slope * v
                squares[j] += z[i, j] * z[i, j]
    else:
        for i in range(n_samples):
            for j in range(n_out):
                z[i, j] += biases[j]
                squares[j] += z[i, j] * z[i, j]


@kernel()
def times_derivative(grad, a, activation, squares):
    """grad <- grad * f'(z), with f' written in terms of the output a = f(z); one pass.

    Every hidden activation's derivative is a function of its output, so the
    pre-activations need not be kept: relu and leaky_relu have a > 0 exactly when z > 0
    (derivative 0 at z = 0, as PyTorch). Also adds grad's squared column norms to
    `squares`, as hidden_activate does for activations.
    """
    n_samples, n_out = grad.shape
    zero, one, slope = _constants(grad)
    if activation == SIGMOID:
        for i in range(n_samples):
            for j in range(n_out):
                grad[i, j] *= a[i, j] * (one - a[i, j])
                squares[j] += grad[i, j] * grad[i, j]
    elif activation == TANH:
        for i in range(n_samples):
            for j in range(n_out):
                grad[i, j] *= one - a[i, j] * a[i, j]
                squares[j] += grad[i, j] * grad[i, j]
    elif activation == RELU:
        # Selects, not branches: they vectorize and never mispredict on signs.
        for i in range(n_samples):
            for j in range(n_out):
                grad[i, j] = grad[i, j] if a[i, j] > 0 else zero
                squares[j] += grad[i, j] * grad[i, j]
    elif activation == LEAKY_RELU:
        for i in range(n_samples):
            for j in range(n_out):
                g = grad[i, j]
                grad[i, j] = g if a[i, j] > 0 else slope * g
                squares[j] += grad[i, j] * grad[i, j]
    else:
        for i in range(n_samples):
            for j in range(n_out):
                squares[j] += grad[i, j] * grad[i, j]


@kernel()
def column_sums(dz, out):
    """out[j] = sum_i dz[i, j]: the bias gradient."""
    n_samples, n_out = dz.shape
    out[:] = 0.0
    for i in range(n_samples):
        for j in range(n_out):
            out[j] += dz[i, j]


@kernel()
def add_column_squares(a, sums):
    """sums[j] += sum_i a[i, j]^2, as hidden_activate does, for arrays made elsewhere."""
    n_samples, n_out = a.shape
    for i in range(n_samples):
        for j in range(n_out):
            sums[j] += a[i, j] * a[i, j]
