"""Losses fused with the output layer's gradient dL/dz.

Each loss is the batch mean of a per-sample loss summed over the outputs. The fused
gradients are valid only for the pairings the API accepts:
- mse with any non-softmax output: dz = 2 (g - y) / n * f'(z);
- binary_cross_entropy with a sigmoid output: dz = (sigmoid(z) - y) / n, loss from the logits;
- cross_entropy with a softmax output: dz = (softmax(z) * sum(y) - y) / n, which is the
  familiar (g - y) / n for probability rows and for class ids.
"""

import numpy as np

from .codes import BINARY_CROSS_ENTROPY, CROSS_ENTROPY, MSE
from .jit import kernel
from .layers import times_derivative


@kernel()
def loss_and_output_grad(logits, outputs, targets, class_ids, loss, activation, grad):
    """Return the batch-mean loss and write dL/dz of the output layer into `grad`.

    `class_ids` (n,) replaces `targets` for cross_entropy when it is not empty.
    """
    n_samples, n_out = logits.shape
    scale = 1.0 / n_samples
    total = 0.0
    if loss == MSE:
        for i in range(n_samples):
            for j in range(n_out):
                diff = outputs[i, j] - targets[i, j]
                total += diff * diff
                grad[i, j] = 2.0 * scale * diff
        times_derivative(grad, outputs, activation, np.zeros(n_out, dtype=grad.dtype))
    elif loss == BINARY_CROSS_ENTROPY:
        for i in range(n_samples):
            for j in range(n_out):
                z = logits[i, j]
                y = targets[i, j]
                # log(1 + exp(-|z|)) never overflows, so any |z| is safe.
                total += max(z, 0.0) - z * y + np.log1p(np.exp(-abs(z)))
                grad[i, j] = scale * (outputs[i, j] - y)
    elif loss == CROSS_ENTROPY:
        for i in range(n_samples):
            peak = logits[i, 0]
            for j in range(1, n_out):
                peak = max(peak, logits[i, j])
            mass = 0.0
            for j in range(n_out):
                mass += np.exp(logits[i, j] - peak)
            log_sum_exp = peak + np.log(mass)
            if class_ids.shape[0] > 0:
                label = class_ids[i]
                total += log_sum_exp - logits[i, label]
                for j in range(n_out):
                    grad[i, j] = scale * outputs[i, j]
                grad[i, label] -= scale
            else:
                row_mass = 0.0
                dot = 0.0
                for j in range(n_out):
                    row_mass += targets[i, j]
                    dot += targets[i, j] * logits[i, j]
                total += log_sum_exp * row_mass - dot
                for j in range(n_out):
                    grad[i, j] = scale * (outputs[i, j] * row_mass - targets[i, j])
    return total * scale
