"""In-place parameter updates on the flat parameter vector, as torch.optim computes them.

Each update touches `params[start:start + n]` and the same range of the optimizer's slots,
with the gradient `grads` (n,) of that range. The loops index local views with the loop
variable: a computed index such as `start + i` might be negative as far as LLVM knows, and
the wrap-around check that follows stops it from vectorizing the loop (10x slower here).
Weight decay is added to the gradient of every parameter, biases
included, as torch.optim does when given all parameters in one group. L1 (`add_l1`) adds
l1 * sign(W) to the weights' gradient only, biases excluded, with the subgradient 0 at 0,
as TensorFlow Playground regularizes; the network kernels apply it before the update.

Scalars are rounded to the parameters' dtype first (`coefficients`), as torch does with a
Python float applied to a float32 tensor; the loops then stay in that dtype and vectorize.
"""

import numpy as np

from .codes import ADAM, SGD
from .jit import kernel

# Positions in the float64 hyper-parameter vector a Network passes to its train step.
LEARNING_RATE, MOMENTUM, NESTEROV, WEIGHT_DECAY, BETA1, BETA2, EPS, L1 = range(8)
N_HYPER = 8

# Positions in the per-step coefficient vector (in the parameters' dtype).
# sgd: learning rate, momentum, weight decay.
SGD_LR, SGD_MOMENTUM, SGD_DECAY = range(3)
# adam: step size lr / (1 - beta1^t), 1 - beta1, beta2, 1 - beta2, eps,
#       sqrt(1 - beta2^t), weight decay.
ADAM_STEP_SIZE, ADAM_ONE_MINUS_BETA1, ADAM_BETA2, ADAM_ONE_MINUS_BETA2, ADAM_EPS, \
    ADAM_CORRECTION2_SQRT, ADAM_DECAY = range(7)
# both: the L1 rate, after either's own.
L1_RATE = 7
N_COEFFICIENTS = 8


@kernel()
def coefficients(optimizer, hyper, step, params):
    """Return this step's scalars in params' dtype; `step` is the 1-based update count."""
    out = np.zeros(N_COEFFICIENTS, dtype=params.dtype)
    if optimizer == SGD:
        out[SGD_LR] = hyper[LEARNING_RATE]
        out[SGD_MOMENTUM] = hyper[MOMENTUM]
        out[SGD_DECAY] = hyper[WEIGHT_DECAY]
    elif optimizer == ADAM:
        beta1 = hyper[BETA1]
        beta2 = hyper[BETA2]
        out[ADAM_STEP_SIZE] = hyper[LEARNING_RATE] / (1.0 - beta1 ** step)
        out[ADAM_ONE_MINUS_BETA1] = 1.0 - beta1
        out[ADAM_BETA2] = beta2
        out[ADAM_ONE_MINUS_BETA2] = 1.0 - beta2
        out[ADAM_EPS] = hyper[EPS]
        out[ADAM_CORRECTION2_SQRT] = np.sqrt(1.0 - beta2 ** step)
        out[ADAM_DECAY] = hyper[WEIGHT_DECAY]
    out[L1_RATE] = hyper[L1]
    return out


@kernel()
def add_l1(weight_grads, weights, l1):
    """weight_grads += l1 * sign(weights): the subgradient of l1 * sum|W| (0 at W = 0)."""
    for i in range(weight_grads.shape[0]):
        if weights[i] > 0:
            weight_grads[i] += l1
        elif weights[i] < 0:
            weight_grads[i] -= l1


@kernel()
def sgd_update(params, momentum_buffer, grads, start, coeffs, nesterov):
    lr = coeffs[SGD_LR]
    momentum = coeffs[SGD_MOMENTUM]
    decay = coeffs[SGD_DECAY]
    n = grads.shape[0]
    p = params[start:start + n]
    # torch starts the buffer as a copy of the first gradient; momentum * 0 + g is that
    # copy exactly, so a zero-initialised buffer needs no first-step special case.
    if momentum == 0:
        for i in range(n):
            p[i] = p[i] - lr * (grads[i] + decay * p[i])
    elif nesterov:
        buffer = momentum_buffer[start:start + n]
        for i in range(n):
            g = grads[i] + decay * p[i]
            velocity = momentum * buffer[i] + g
            buffer[i] = velocity
            p[i] = p[i] - lr * (g + momentum * velocity)
    else:
        buffer = momentum_buffer[start:start + n]
        for i in range(n):
            velocity = momentum * buffer[i] + (grads[i] + decay * p[i])
            buffer[i] = velocity
            p[i] = p[i] - lr * velocity


@kernel()
def adam_update(params, exp_avg, exp_avg_sq, grads, start, coeffs):
    step_size = coeffs[ADAM_STEP_SIZE]
    one_minus_beta1 = coeffs[ADAM_ONE_MINUS_BETA1]
    beta2 = coeffs[ADAM_BETA2]
    one_minus_beta2 = coeffs[ADAM_ONE_MINUS_BETA2]
    eps = coeffs[ADAM_EPS]
    correction2_sqrt = coeffs[ADAM_CORRECTION2_SQRT]
    decay = coeffs[ADAM_DECAY]
    n = grads.shape[0]
    p = params[start:start + n]
    m_all = exp_avg[start:start + n]
    v_all = exp_avg_sq[start:start + n]
    for i in range(n):
        g = grads[i] + decay * p[i]
        # torch writes the first moment as lerp(m, g, 1 - beta1).
        m = m_all[i] + one_minus_beta1 * (g - m_all[i])
        v = beta2 * v_all[i] + one_minus_beta2 * (g * g)
        m_all[i] = m
        v_all[i] = v
        p[i] = p[i] - step_size * (m / (np.sqrt(v) / correction2_sqrt + eps))


@kernel()
def update(optimizer, nesterov, coeffs, params, slot1, slot2, grads, start):
    """Apply `optimizer` to params[start:start + len(grads)]; unused slots may be empty."""
    if optimizer == SGD:
        sgd_update(params, slot1, grads, start, coeffs, nesterov)
    elif optimizer == ADAM:
        adam_update(params, slot1, slot2, grads, start, coeffs)


@kernel()
def sgd_outer_update(params, start, layer_input, dz, coeffs):
    """Plain SGD on one weight block from a single sample's gradient outer(layer_input, dz).

    The gradient is never materialised: each element is formed and applied in one pass,
    so the block is streamed once and stays in cache for the next step.
    """
    lr = coeffs[SGD_LR]
    decay = coeffs[SGD_DECAY]
    n_cols = dz.shape[0]
    for row in range(layer_input.shape[0]):
        scale = layer_input[row]
        block = params[start + row * n_cols:start + (row + 1) * n_cols]
        for j in range(n_cols):
            block[j] = block[j] - lr * (scale * dz[j] + decay * block[j])
