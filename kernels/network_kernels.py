"""Whole-network kernels: one compiled call per predict, evaluate or train step.

Parameters live in one flat vector, layer after layer: W (n_in x n_out, row-major) then
b (n_out). Per-sample buffers hold every layer's output for a batch, layer after layer,
each (n_samples x n_out) row-major. Layer views are reshaped slices, so no Python loop
over layers runs on the hot path.

The lecture's formulas, for layer l with input a_prev:
    z = a_prev @ W + b,  a = f(z)                                          (forward)
    dW = a_prev.T @ dz,  db = sum_i dz,  da_prev = dz @ W.T,  dz_prev = da_prev * f'(z_prev)
Each layer's dz is computed once and reused for dW, db and da_prev. A train step first
back-propagates every dz (which needs the old weights), bounding the gradient for the
divergence guard, then updates each layer in place.

train_step takes its arrays bundled by what they are (arguments.py: Net, Batch, Workspace,
Optimizer, Guard), as plain tuples; predict, evaluate and layer_activations take theirs as
separate arguments (arguments.py says why). The whole-network kernels below them take the
structures; the per-layer and per-optimizer kernels (layers.py, optimizers.py, guard.py)
take the arrays they work on.
"""

import numpy as np

from .arguments import Batch, Guard, Net, Optimizer, Workspace
from .blas import gemm_transposed_a, matmul
from .codes import BINARY_CROSS_ENTROPY, CROSS_ENTROPY, SGD
from .guard import advance, gradient_limit
from .jit import kernel
from .layers import (activate, add_bias, add_column_squares, column_sums, hidden_activate,
                     times_derivative)
from .losses import loss_and_output_grad
from .optimizers import (L1_RATE, MOMENTUM, NESTEROV, SGD_DECAY, SGD_LR, add_l1, coefficients,
                         sgd_outer_update, update)

# The Optimizer code that asks train_step for gradients only, with no update.
GRADIENTS_ONLY = -1

# What train_step, evaluate and predict report besides their results.
OK = 0                # the step was applied (or the gradients / outputs computed)
OVER_LIMIT = 1        # the guard could not prove the update finite: nothing changed
LOSS_NOT_FINITE = 2   # the loss before the update is not finite: nothing changed
BAD_BATCH = 3         # x or y holds a value the kernels refuse: nothing changed


@kernel()
def _param_offset(layer_sizes, layer):
    offset = 0
    for l in range(layer):
        offset += layer_sizes[l] * layer_sizes[l + 1] + layer_sizes[l + 1]
    return offset


@kernel()
def _weights(params, layer_sizes, layer):
    offset = _param_offset(layer_sizes, layer)
    n_in = layer_sizes[layer]
    n_out = layer_sizes[layer + 1]
    weights = params[offset:offset + n_in * n_out].reshape((n_in, n_out))
    biases = params[offset + n_in * n_out:offset + n_in * n_out + n_out]
    return weights, biases


@kernel()
def _layer_rows(buffer, layer_sizes, layer, n_samples):
    offset = 0
    for l in range(layer):
        offset += n_samples * layer_sizes[l + 1]
    n_out = layer_sizes[layer + 1]
    return buffer[offset:offset + n_samples * n_out].reshape((n_samples, n_out))


@kernel(fastmath={"reassoc"})
def _all_finite(a):
    # v - v is 0 for a finite v and NaN otherwise; with reassociation allowed the sum
    # vectorizes (an early exit would not).
    total = a[0, 0] - a[0, 0]
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            total += a[i, j] - a[i, j]
    return total == 0


@kernel(fastmath={"reassoc"})
def _inputs_finite(x, squares):
    # One pass: finiteness as in _all_finite, and x's squared column norms for the guard.
    total = x[0, 0] - x[0, 0]
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[i, j]
            total += v - v
            squares[j] += v * v
    return total == 0


@kernel()
def batch_is_valid(batch, n_out, squares):
    """Whether every value is one the kernels accept (shapes and dtypes are checked before).

    x finite; class ids in [0, n_out); targets finite, in [0, 1] for binary_cross_entropy,
    rows >= 0 summing to 1 (within row_sum_tolerance) for cross_entropy. The Network explains a refusal with numpy.
    Adds x's squared column norms to squares[:n_in].
    """
    targets = batch.targets
    class_ids = batch.class_ids
    loss = batch.loss
    if not _inputs_finite(batch.x, squares):
        return False
    for i in range(class_ids.shape[0]):
        if class_ids[i] < 0 or class_ids[i] >= n_out:
            return False
    if targets.shape[0] == 0:
        return True
    if not _all_finite(targets):
        return False
    if loss == BINARY_CROSS_ENTROPY:
        for i in range(targets.shape[0]):
            for j in range(targets.shape[1]):
                if not 0 <= targets[i, j] <= 1:
                    return False
    elif loss == CROSS_ENTROPY:
        for i in range(targets.shape[0]):
            row_sum = 0.0
            for j in range(targets.shape[1]):
                if targets[i, j] < 0:
                    return False
                row_sum += targets[i, j]
            if abs(row_sum - 1.0) > batch.row_sum_tolerance:
                return False
    return True


@kernel()
def forward(net, x, outputs, logits, squares):
    """Fill `outputs` with every layer's activations and `logits` with the last layer's z.

    Adds each hidden layer's squared column norms to its slice of `squares` (see
    _norm_offset), for the guard's gradient bound.
    """
    params = net.params
    layer_sizes = net.layer_sizes
    activations = net.activations
    n_samples = x.shape[0]
    n_layers = layer_sizes.shape[0] - 1
    layer_input = x
    for layer in range(n_layers):
        weights, biases = _weights(params, layer_sizes, layer)
        a = _layer_rows(outputs, layer_sizes, layer, n_samples)
        if layer < n_layers - 1:
            matmul(layer_input, weights, a)
            offset = _norm_offset(layer_sizes, layer + 1)
            hidden_activate(a, biases, activations[layer],
                            squares[offset:offset + layer_sizes[layer + 1]])
        else:
            matmul(layer_input, weights, logits)
            add_bias(logits, biases)
            activate(logits, activations[layer], a)
        layer_input = a


@kernel()
def _norm_offset(layer_sizes, layer):
    """Where layer `layer`'s units (0: the inputs) start in a column-norm vector."""
    offset = 0
    for l in range(layer):
        offset += layer_sizes[l]
    return offset


@kernel()
def back_propagate(net, x, workspace, weight_grads, squares):
    """Every layer's dz (into the workspace's `deltas`, the output layer's already there) and
    db (into its `grads`), from the activations in its `outputs`.

    Fills the weight gradients too when `weight_grads`. Returns an upper bound on every
    gradient element's magnitude, or inf (or NaN) when a gradient may not be finite. By
    Cauchy-Schwarz over the samples, |dW_ij| <= ||a_prev[:, i]|| ||dz[:, j]|| and
    |db_j| <= sqrt(n) ||dz[:, j]||; `squares` holds the activations' squared column norms
    (from forward, and the inputs' from batch_is_valid).
    """
    params = net.params
    layer_sizes = net.layer_sizes
    activations = net.activations
    outputs = workspace.outputs
    deltas = workspace.deltas
    grads = workspace.grads
    n_samples = x.shape[0]
    n_layers = layer_sizes.shape[0] - 1
    delta_squares = np.zeros(_norm_offset(layer_sizes, n_layers + 1), dtype=params.dtype)
    last = n_layers - 1
    offset = _norm_offset(layer_sizes, n_layers)
    add_column_squares(_layer_rows(deltas, layer_sizes, last, n_samples),
                       delta_squares[offset:offset + layer_sizes[n_layers]])
    bound = 0.0
    for layer in range(last, -1, -1):
        n_in = layer_sizes[layer]
        n_out = layer_sizes[layer + 1]
        bias_start = _param_offset(layer_sizes, layer) + n_in * n_out
        dz = _layer_rows(deltas, layer_sizes, layer, n_samples)
        weights, _ = _weights(params, layer_sizes, layer)
        layer_input = x
        if layer > 0:
            layer_input = _layer_rows(outputs, layer_sizes, layer - 1, n_samples)
            dz_prev = _layer_rows(deltas, layer_sizes, layer - 1, n_samples)
            matmul(dz, weights.T, dz_prev)
            offset = _norm_offset(layer_sizes, layer)
            times_derivative(dz_prev, layer_input, activations[layer - 1],
                             delta_squares[offset:offset + n_in])
        column_sums(dz, grads[bias_start:bias_start + n_out])
        if weight_grads:
            matmul(layer_input.T, dz, grads[bias_start - n_in * n_out:bias_start].reshape((n_in, n_out)))
        inputs_at = _norm_offset(layer_sizes, layer)
        deltas_at = _norm_offset(layer_sizes, layer + 1)
        input_norm = np.sqrt(_largest(squares[inputs_at:inputs_at + n_in]))
        delta_norm = np.sqrt(_largest(delta_squares[deltas_at:deltas_at + n_out]))
        bound = max(bound, input_norm * delta_norm, np.sqrt(n_samples) * delta_norm)
        if not bound < np.inf:
            return np.inf
    return bound


@kernel()
def _largest(values):
    """The largest value, or NaN when any is NaN (the bound must not forget a NaN)."""
    peak = 0.0
    for v in values:
        if not v <= peak:
            peak = v
            if v != v:
                return v
    return peak


@kernel()
def apply_updates(net, x, workspace, optimizer, coeffs):
    """Update every layer's parameters and optimizer slots in place from its dz and input
    (back_propagate ran first; the workspace's `grads` hold the biases' gradient).

    A plain-SGD step never materialises dW: BLAS applies a_prev.T @ dz to W directly
    (alpha = -lr, beta = 1 - lr * decay), and a single-sample step applies the outer
    product in one loop, so W is streamed once per step. With L1, dW is materialised and
    l1 * sign(W) added to it (the weights only) before the optimizer's update.
    """
    params = net.params
    layer_sizes = net.layer_sizes
    outputs = workspace.outputs
    deltas = workspace.deltas
    grads = workspace.grads
    code = optimizer.code
    slot1 = optimizer.slot1
    slot2 = optimizer.slot2
    n_samples = x.shape[0]
    nesterov = optimizer.hyper[NESTEROV] != 0.0
    l1 = coeffs[L1_RATE]
    plain_sgd = code == SGD and optimizer.hyper[MOMENTUM] == 0.0 and l1 == 0
    learning_rate = coeffs[SGD_LR]
    shrink = 1.0 - coeffs[SGD_LR] * coeffs[SGD_DECAY]
    for layer in range(layer_sizes.shape[0] - 1):
        n_in = layer_sizes[layer]
        n_out = layer_sizes[layer + 1]
        start = _param_offset(layer_sizes, layer)
        bias_start = start + n_in * n_out
        end = bias_start + n_out
        dz = _layer_rows(deltas, layer_sizes, layer, n_samples)
        layer_input = x
        if layer > 0:
            layer_input = _layer_rows(outputs, layer_sizes, layer - 1, n_samples)
        if plain_sgd:
            if n_samples == 1:
                sgd_outer_update(params, start, layer_input[0], dz[0], coeffs)
            else:
                weights, _ = _weights(params, layer_sizes, layer)
                gemm_transposed_a(layer_input, dz, weights, -learning_rate, shrink)
            update(code, nesterov, coeffs, params, slot1, slot2, grads[bias_start:end], bias_start)
        else:
            matmul(layer_input.T, dz, grads[start:bias_start].reshape((n_in, n_out)))
            if l1 != 0:
                add_l1(grads[start:bias_start], params[start:bias_start], l1)
            update(code, nesterov, coeffs, params, slot1, slot2, grads[start:end], start)


@kernel()
def train_step(net, batch, workspace, optimizer, guard, step, force):
    """One optimizer step on the Net's params and the Optimizer's slots, in place; return
    (batch loss before it, status). Takes its structures as plain tuples (arguments.py).

    Status OK: applied, and the Guard's bounds advanced past it. Otherwise nothing
    changed: BAD_BATCH, LOSS_NOT_FINITE, or OVER_LIMIT when the gradient bound exceeds what
    keeps every value under the Guard's top (unless `force`; see guard.py). With the
    Optimizer code GRADIENTS_ONLY it only fills the Workspace's grads. `step` is the
    1-based number of this update.
    """
    net = Net(*net)
    batch = Batch(*batch)
    workspace = Workspace(*workspace)
    optimizer = Optimizer(*optimizer)
    guard = Guard(*guard)
    layer_sizes = net.layer_sizes
    n_samples = batch.x.shape[0]
    last = layer_sizes.shape[0] - 2
    squares = np.zeros(_norm_offset(layer_sizes, last + 2), dtype=net.params.dtype)
    if not batch_is_valid(batch, layer_sizes[-1], squares):
        return np.nan, BAD_BATCH
    forward(net, batch.x, workspace.outputs, workspace.logits, squares)
    batch_loss = loss_and_output_grad(
        workspace.logits, _layer_rows(workspace.outputs, layer_sizes, last, n_samples),
        batch.targets, batch.class_ids, batch.loss, net.activations[last],
        _layer_rows(workspace.deltas, layer_sizes, last, n_samples))
    if not np.isfinite(batch_loss):
        return batch_loss, LOSS_NOT_FINITE
    gradients_only = optimizer.code == GRADIENTS_ONLY
    bound = back_propagate(net, batch.x, workspace, gradients_only, squares)
    if gradients_only:
        return batch_loss, OK
    if not (force or bound <= gradient_limit(optimizer.code, optimizer.hyper, guard.bounds, step,
                                              guard.top)):
        return batch_loss, OVER_LIMIT
    coeffs = coefficients(optimizer.code, optimizer.hyper, step, net.params)
    apply_updates(net, batch.x, workspace, optimizer, coeffs)
    advance(optimizer.code, optimizer.hyper, guard.bounds, bound, step)
    return batch_loss, OK


@kernel()
def _total_width(layer_sizes):
    total = 0
    for l in range(1, layer_sizes.shape[0]):
        total += layer_sizes[l]
    return total


@kernel()
def _widest_hidden(layer_sizes):
    widest = 0
    for l in range(1, layer_sizes.shape[0] - 1):
        widest = max(widest, layer_sizes[l])
    return widest


@kernel()
def predict(params, layer_sizes, activations, x):
    """Return (output activations, valid): the forward pass and nothing else.

    No column norms (the guard's, for training) and no buffer per layer: the hidden layers
    take turns in two row buffers and the last layer is computed in the returned array.
    The values equal `forward`'s (the same products and elementwise operations). Allocates
    its own buffers, so calls may run at once.
    """
    n_samples = x.shape[0]
    n_layers = layer_sizes.shape[0] - 1
    out = np.empty((n_samples, layer_sizes[-1]), dtype=params.dtype)
    if not _all_finite(x):
        return out, False
    buffers = np.empty((2, n_samples * _widest_hidden(layer_sizes)), dtype=params.dtype)
    layer_input = x
    for layer in range(n_layers - 1):
        weights, biases = _weights(params, layer_sizes, layer)
        n_out = layer_sizes[layer + 1]
        a = buffers[layer % 2, :n_samples * n_out].reshape((n_samples, n_out))
        matmul(layer_input, weights, a)
        hidden_activate(a, biases, activations[layer], None)
        layer_input = a
    weights, biases = _weights(params, layer_sizes, n_layers - 1)
    matmul(layer_input, weights, out)
    add_bias(out, biases)
    activate(out, activations[n_layers - 1], out)
    return out, True


@kernel()
def layer_activations(params, layer_sizes, activations, x):
    """Return (every layer's activations, layer after layer as `forward` lays them out in
    one flat buffer, valid); allocates its own buffers (reentrant)."""
    n_samples = x.shape[0]
    outputs = np.empty(n_samples * _total_width(layer_sizes), dtype=params.dtype)
    logits = np.empty((n_samples, layer_sizes[-1]), dtype=params.dtype)
    if not _all_finite(x):
        return outputs, False
    forward(Net(params, layer_sizes, activations), x, outputs, logits,
            np.zeros(_norm_offset(layer_sizes, layer_sizes.shape[0]), dtype=params.dtype))
    return outputs, True


@kernel()
def evaluate(params, layer_sizes, activations, loss, x, targets, class_ids, row_sum_tolerance):
    """Return (batch loss, output activations, valid) without touching `params`."""
    net = Net(params, layer_sizes, activations)
    batch = Batch(x, targets, class_ids, loss, row_sum_tolerance)
    n_samples = x.shape[0]
    outputs = np.empty(n_samples * _total_width(layer_sizes), dtype=params.dtype)
    logits = np.empty((n_samples, layer_sizes[-1]), dtype=params.dtype)
    squares = np.zeros(_norm_offset(layer_sizes, layer_sizes.shape[0]), dtype=params.dtype)
    if not batch_is_valid(batch, layer_sizes[-1], squares):
        return np.nan, logits, False
    forward(net, x, outputs, logits, squares)
    last = layer_sizes.shape[0] - 2
    predictions = _layer_rows(outputs, layer_sizes, last, n_samples)
    scratch = np.empty_like(logits)
    batch_loss = loss_and_output_grad(logits, predictions, targets, class_ids, loss,
                                      activations[last], scratch)
    return batch_loss, predictions.copy(), True
