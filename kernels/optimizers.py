"""Parameter updates on the flat parameter vector, with torch.optim's conventions.

`out` may be `params` itself (in place) or another buffer of the same size; every element
of `out` is written. Weight decay is added to the gradient of every parameter, biases
included, as torch.optim does when given all parameters in one group.
"""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def sgd_update(params, grads, momentum_buffer, learning_rate, momentum, nesterov,
               weight_decay, out):
    # torch starts the buffer as a copy of the first gradient; momentum * 0 + g is that
    # copy exactly, so a zero-initialised buffer needs no first-step special case.
    for i in range(params.shape[0]):
        g = grads[i] + weight_decay * params[i]
        if momentum != 0.0:
            velocity = momentum * momentum_buffer[i] + g
            momentum_buffer[i] = velocity
            g = g + momentum * velocity if nesterov else velocity
        out[i] = params[i] - learning_rate * g


@njit(nogil=True, cache=True)
def adam_update(params, grads, exp_avg, exp_avg_sq, learning_rate, beta1, beta2, eps,
                weight_decay, step, out):
    """`step` is the 1-based number of this update, for the bias corrections."""
    step_size = learning_rate / (1.0 - beta1 ** step)
    bias_correction2_sqrt = np.sqrt(1.0 - beta2 ** step)
    for i in range(params.shape[0]):
        g = grads[i] + weight_decay * params[i]
        # torch writes the first moment as lerp(m, g, 1 - beta1).
        m = exp_avg[i] + (1.0 - beta1) * (g - exp_avg[i])
        v = beta2 * exp_avg_sq[i] + (1.0 - beta2) * (g * g)
        exp_avg[i] = m
        exp_avg_sq[i] = v
        out[i] = params[i] - step_size * (m / (np.sqrt(v) / bias_correction2_sqrt + eps))
