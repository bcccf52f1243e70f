"""Whole-network kernels: one compiled call per predict, evaluate or train step.

Parameters live in one flat vector, layer after layer: W (n_in x n_out, row-major) then
b (n_out). Per-sample buffers hold every layer's output for a batch, layer after layer,
each (n_samples x n_out) row-major. The layer views are reshaped slices, so no Python
loop over layers runs on the hot path.

The lecture's formulas, for layer l with input a_prev:
    z = a_prev @ W + b,  a = f(z)                    (forward)
    dW = a_prev.T @ dz,  db = sum_i dz,  da_prev = dz @ W.T,  dz_prev = da_prev * f'(z_prev)
with each layer's dz computed once and reused for dW, db and da_prev.
"""

import numpy as np
from numba import njit

from .codes import ADAM, SGD
from .layers import activate, add_bias, bias_activate_inplace, column_sums, times_derivative
from .losses import loss_and_output_grad
from .optimizers import adam_update, sgd_update

# Positions in the float64 `hyper` vector passed to train_step.
LEARNING_RATE, MOMENTUM, NESTEROV, WEIGHT_DECAY, BETA1, BETA2, EPS = range(7)
N_HYPER = 7


@njit(nogil=True, cache=True)
def _weights(params, layer_sizes, layer):
    offset = 0
    for l in range(layer):
        offset += layer_sizes[l] * layer_sizes[l + 1] + layer_sizes[l + 1]
    n_in = layer_sizes[layer]
    n_out = layer_sizes[layer + 1]
    weights = params[offset:offset + n_in * n_out].reshape((n_in, n_out))
    biases = params[offset + n_in * n_out:offset + n_in * n_out + n_out]
    return weights, biases


@njit(nogil=True, cache=True)
def _layer_rows(buffer, layer_sizes, layer, n_samples):
    offset = 0
    for l in range(layer):
        offset += n_samples * layer_sizes[l + 1]
    n_out = layer_sizes[layer + 1]
    return buffer[offset:offset + n_samples * n_out].reshape((n_samples, n_out))


@njit(nogil=True, cache=True)
def forward(params, layer_sizes, activations, x, outputs, logits):
    """Fill `outputs` with every layer's activations and `logits` with the last layer's z."""
    n_samples = x.shape[0]
    n_layers = layer_sizes.shape[0] - 1
    layer_input = x
    for layer in range(n_layers):
        weights, biases = _weights(params, layer_sizes, layer)
        a = _layer_rows(outputs, layer_sizes, layer, n_samples)
        if layer < n_layers - 1:
            np.dot(layer_input, weights, a)
            bias_activate_inplace(a, biases, activations[layer])
        else:
            np.dot(layer_input, weights, logits)
            add_bias(logits, biases)
            activate(logits, activations[layer], a)
        layer_input = a


@njit(nogil=True, cache=True)
def forward_backward(params, layer_sizes, activations, loss, x, targets, class_ids,
                     outputs, logits, deltas, grads):
    """Return the batch loss and write its gradient, laid out like `params`, into `grads`."""
    n_samples = x.shape[0]
    n_layers = layer_sizes.shape[0] - 1
    forward(params, layer_sizes, activations, x, outputs, logits)
    last = n_layers - 1
    batch_loss = loss_and_output_grad(
        logits, _layer_rows(outputs, layer_sizes, last, n_samples), targets, class_ids,
        loss, activations[last], _layer_rows(deltas, layer_sizes, last, n_samples))
    for layer in range(last, -1, -1):
        dz = _layer_rows(deltas, layer_sizes, layer, n_samples)
        weights, _ = _weights(params, layer_sizes, layer)
        grad_weights, grad_biases = _weights(grads, layer_sizes, layer)
        layer_input = x
        if layer > 0:
            layer_input = _layer_rows(outputs, layer_sizes, layer - 1, n_samples)
        np.dot(layer_input.T, dz, grad_weights)
        column_sums(dz, grad_biases)
        if layer > 0:
            dz_prev = _layer_rows(deltas, layer_sizes, layer - 1, n_samples)
            np.dot(dz, weights.T, dz_prev)
            times_derivative(dz_prev, layer_input, activations[layer - 1])
    return batch_loss


@njit(nogil=True, cache=True)
def train_step(params, layer_sizes, activations, loss, x, targets, class_ids, outputs,
               logits, deltas, grads, optimizer, hyper, slot1, slot2, step, new_params):
    """One optimizer step: gradients at `params`, updated parameters into `new_params`.

    `new_params` may be `params` (in place). `step` is the 1-based number of this update.
    Returns the batch loss before the update.
    """
    batch_loss = forward_backward(params, layer_sizes, activations, loss, x, targets,
                                  class_ids, outputs, logits, deltas, grads)
    if optimizer == SGD:
        sgd_update(params, grads, slot1, hyper[LEARNING_RATE], hyper[MOMENTUM],
                   hyper[NESTEROV] != 0.0, hyper[WEIGHT_DECAY], new_params)
    elif optimizer == ADAM:
        adam_update(params, grads, slot1, slot2, hyper[LEARNING_RATE], hyper[BETA1],
                    hyper[BETA2], hyper[EPS], hyper[WEIGHT_DECAY], step, new_params)
    return batch_loss


@njit(nogil=True, cache=True)
def predict(params, layer_sizes, activations, x):
    """Return the output layer's activations; allocates its own buffers (reentrant)."""
    n_samples = x.shape[0]
    total_width = 0
    for l in range(1, layer_sizes.shape[0]):
        total_width += layer_sizes[l]
    outputs = np.empty(n_samples * total_width, dtype=params.dtype)
    logits = np.empty((n_samples, layer_sizes[-1]), dtype=params.dtype)
    forward(params, layer_sizes, activations, x, outputs, logits)
    return _layer_rows(outputs, layer_sizes, layer_sizes.shape[0] - 2, n_samples).copy()


@njit(nogil=True, cache=True)
def evaluate(params, layer_sizes, activations, loss, x, targets, class_ids):
    """Return (batch loss, output activations) without touching `params`."""
    n_samples = x.shape[0]
    total_width = 0
    for l in range(1, layer_sizes.shape[0]):
        total_width += layer_sizes[l]
    outputs = np.empty(n_samples * total_width, dtype=params.dtype)
    logits = np.empty((n_samples, layer_sizes[-1]), dtype=params.dtype)
    forward(params, layer_sizes, activations, x, outputs, logits)
    last = layer_sizes.shape[0] - 2
    predictions = _layer_rows(outputs, layer_sizes, last, n_samples)
    scratch = np.empty_like(logits)
    batch_loss = loss_and_output_grad(logits, predictions, targets, class_ids, loss,
                                      activations[last], scratch)
    return batch_loss, predictions.copy()
