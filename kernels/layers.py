"""One dense layer's elementwise work: bias, activation, activation derivative.

The matmuls around these (`z = x @ W`, `dW = x.T @ dz`, `dx = dz @ W.T`) stay on BLAS;
these loops are serial on purpose: with BLAS threads owning the cores, a parallel
elementwise region only adds launch cost and contention (see docs/design.md).
"""

from .codes import IDENTITY, LEAKY_RELU, LEAKY_RELU_SLOPE, RELU, SIGMOID, SOFTMAX, TANH
from .jit import kernel
from .vector_math import exp, tanh


@kernel(inline="always")
def sigmoid(z, one):
    # exp of -|z| never overflows; both branches' values are formed and one is selected, so
    # a loop over this has no branch and vectorizes. `one` is 1 in z's dtype: a float
    # literal would turn float32 arithmetic into float64 (conversions, no wide vectors).
    e = exp(-abs(z))
    return one / (one + e) if z >= 0 else e / (one + e)


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
                e = exp(z[i, j] - peak)
                out[i, j] = e
                total += e
            for j in range(n_out):
                out[i, j] /= total


@kernel()
def hidden_activate(z, biases, activation, squares):
    """z <- f(z + b) for a hidden layer (its pre-activation is not kept), one pass.

    In the same pass, squares[j] += sum_i a[i, j]^2: the squared column norms the
    divergence guard bounds gradients with (a non-finite value makes its sum non-finite).
    squares=None (inference) compiles a variant without them: numba prunes the
    `is not None` branches of a None argument at compile time, so each variant's loop is
    straight-line, and both compute a identically.
    """
    # One loop per activation: with the choice inside the loop, LLVM computes the sigmoid's
    # exp for every element and selects (measured 50x slower for relu).
    n_samples, n_out = z.shape
    zero, one, slope = _constants(z)
    if activation == SIGMOID:
        for i in range(n_samples):
            for j in range(n_out):
                z[i, j] = sigmoid(z[i, j] + biases[j], one)
                if squares is not None:
                    squares[j] += z[i, j] * z[i, j]
    elif activation == TANH:
        for i in range(n_samples):
            for j in range(n_out):
                z[i, j] = tanh(z[i, j] + biases[j])
                if squares is not None:
                    squares[j] += z[i, j] * z[i, j]
    elif activation == RELU:
        for i in range(n_samples):
            for j in range(n_out):
                v = z[i, j] + biases[j]
                z[i, j] = v if v > 0 else zero
                if squares is not None:
                    squares[j] += z[i, j] * z[i, j]
    elif activation == LEAKY_RELU:
        for i in range(n_samples):
            for j in range(n_out):
                v = z[i, j] + biases[j]
                z[i, j] = v if v > 0 else slope * v
                if squares is not None:
                    squares[j] += z[i, j] * z[i, j]
    else:
        for i in range(n_samples):
            for j in range(n_out):
                z[i, j] += biases[j]
                if squares is not None:
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
