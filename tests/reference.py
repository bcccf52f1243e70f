"""A slow, readable float64 reference for nnserve's networks, written from the math.

Nothing here imports nnserve: the fast path is tested against this module, so it must not
share code with it. Everything is plain numpy in float64, one layer and one formula at a
time, in the notation of the lecture:

    forward   z_l = a_{l-1} @ W_l + b_l,   a_l = f_l(z_l),   a_0 = x
    backward  dz_L = dL/dz_L (from the loss),
              dW_l = a_{l-1}.T @ dz_l,  db_l = sum over samples of dz_l,
              da_{l-1} = dz_l @ W_l.T,  dz_{l-1} = da_{l-1} * f'_{l-1}(z_{l-1})

Weights are lists of (W (n_in, n_out), b (n_out,)) pairs, as Network.get_weights returns.
The optimizers follow the update rules printed in the torch.optim.SGD and torch.optim.Adam
documentation (one parameter group, no dampening, not maximize, not amsgrad).
"""

import numpy as np

LEAKY_RELU_SLOPE = 0.01


# -- activations: f(z) and f'(z), both written in terms of the pre-activation z ------------

def activation(name, z):
    """Return f(z) for the named activation (softmax row by row)."""
    if name == "identity":
        return z.copy()
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.where(z > 0, z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, LEAKY_RELU_SLOPE * z)
    if name == "softmax":
        shifted = np.exp(z - z.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    raise KeyError(name)


def activation_derivative(name, z):
    """Return f'(z) elementwise; relu and leaky_relu take the left derivative at z = 0."""
    if name == "identity":
        return np.ones_like(z)
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 - s)
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "relu":
        return np.where(z > 0, 1.0, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, 1.0, LEAKY_RELU_SLOPE)
    raise KeyError(f"{name} has no elementwise derivative")


# -- losses ---------------------------------------------------------------------------

def one_hot(class_ids, n_classes):
    """Return the (n, n_classes) rows with a 1 at each sample's class id."""
    rows = np.zeros((len(class_ids), n_classes))
    rows[np.arange(len(class_ids)), class_ids] = 1.0
    return rows


def as_target_rows(loss, y, n_out):
    """Return the targets as float64 rows (n, n_out), expanding class ids to one-hot rows."""
    y = np.asarray(y)
    if loss == "cross_entropy" and y.ndim == 1:
        return one_hot(y, n_out)
    return np.asarray(y, dtype=np.float64).reshape(-1, n_out)


def loss_value(loss, z, a, y):
    """Return the batch mean of the per-sample loss summed over the outputs.

    mse: sum_j (a_j - y_j)^2.
    binary_cross_entropy: sum_j -(y_j log s(z_j) + (1 - y_j) log(1 - s(z_j))), which for
        s = sigmoid equals max(z, 0) - z y + log(1 + exp(-|z|)) (no overflow for any z).
    cross_entropy: -sum_j y_j log softmax(z)_j = sum_j y_j (logsumexp(z) - z_j).
    """
    n_samples = z.shape[0]
    if loss == "mse":
        return float(np.sum((a - y) ** 2) / n_samples)
    if loss == "binary_cross_entropy":
        per_output = np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))
        return float(np.sum(per_output) / n_samples)
    if loss == "cross_entropy":
        peak = z.max(axis=1, keepdims=True)
        log_sum_exp = peak + np.log(np.sum(np.exp(z - peak), axis=1, keepdims=True))
        return float(np.sum(y * (log_sum_exp - z)) / n_samples)
    raise KeyError(loss)


def output_delta(loss, output_activation, z, a, y):
    """Return dL/dz for the output layer.

    mse: dL/da = 2 (a - y) / n, times f'(z) for the output activation.
    binary_cross_entropy with sigmoid: d/dz [max(z,0) - z y + log(1 + e^-|z|)] / n
        = (sigmoid(z) - y) / n.
    cross_entropy with softmax: d/dz_j of sum_k y_k (logsumexp(z) - z_k) / n
        = (softmax(z)_j * sum_k y_k - y_j) / n (rows need not sum to exactly 1).
    """
    n_samples = z.shape[0]
    if loss == "mse":
        return 2.0 * (a - y) / n_samples * activation_derivative(output_activation, z)
    if loss == "binary_cross_entropy":
        return (activation("sigmoid", z) - y) / n_samples
    if loss == "cross_entropy":
        return (activation("softmax", z) * y.sum(axis=1, keepdims=True) - y) / n_samples
    raise KeyError(loss)


# -- the network ----------------------------------------------------------------------

def forward(weights, activations, x):
    """Return (pre-activations [z_1..z_L], activations [a_0 = x, a_1..a_L])."""
    layer_input = np.asarray(x, dtype=np.float64)
    pre_activations, layer_outputs = [], [layer_input]
    for (W, b), name in zip(weights, activations):
        z = layer_input @ W + b
        layer_input = activation(name, z)
        pre_activations.append(z)
        layer_outputs.append(layer_input)
    return pre_activations, layer_outputs


def predict(weights, activations, x):
    """Return the output layer's activations."""
    return forward(weights, activations, x)[1][-1]


def loss_and_gradients(weights, activations, loss, x, y):
    """Return (batch loss, [(dW, db), ...]) by backpropagation."""
    weights = [(np.asarray(W, np.float64), np.asarray(b, np.float64)) for W, b in weights]
    pre_activations, layer_outputs = forward(weights, activations, x)
    targets = as_target_rows(loss, y, weights[-1][0].shape[1])
    value = loss_value(loss, pre_activations[-1], layer_outputs[-1], targets)
    dz = output_delta(loss, activations[-1], pre_activations[-1], layer_outputs[-1], targets)
    gradients = [None] * len(weights)
    for layer in range(len(weights) - 1, -1, -1):
        W, _ = weights[layer]
        gradients[layer] = (layer_outputs[layer].T @ dz, dz.sum(axis=0))
        if layer > 0:
            da_prev = dz @ W.T
            dz = da_prev * activation_derivative(activations[layer - 1], pre_activations[layer - 1])
    return value, gradients


# -- optimizers (torch.optim's update rules, on lists of arrays) -----------------------

class SGD:
    """torch.optim.SGD with dampening 0:

        g = grad + weight_decay * p
        if momentum: buf = g on the first step, else momentum * buf + g
                     g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    """

    def __init__(self, learning_rate, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.momentum_buffers = None

    def step(self, params, grads):
        """Return the updated parameters (new arrays); buffers are kept on self."""
        if self.momentum and self.momentum_buffers is None:
            self.momentum_buffers = [None] * len(params)
        updated = []
        for i, (p, grad) in enumerate(zip(params, grads)):
            g = grad + self.weight_decay * p if self.weight_decay else grad
            if self.momentum:
                if self.momentum_buffers[i] is None:
                    buf = g.copy()
                else:
                    buf = self.momentum * self.momentum_buffers[i] + g
                self.momentum_buffers[i] = buf
                g = g + self.momentum * buf if self.nesterov else buf
            updated.append(p - self.learning_rate * g)
        return updated


class Adam:
    """torch.optim.Adam (amsgrad off), weight decay added to the gradient (not AdamW):

        g = grad + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    def __init__(self, learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.learning_rate = learning_rate
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.t = 0
        self.exp_avg = None
        self.exp_avg_sq = None

    def step(self, params, grads):
        """Return the updated parameters (new arrays); moments are kept on self."""
        if self.exp_avg is None:
            self.exp_avg = [np.zeros_like(p) for p in params]
            self.exp_avg_sq = [np.zeros_like(p) for p in params]
        self.t += 1
        bias_correction1 = 1.0 - self.beta1 ** self.t
        bias_correction2 = 1.0 - self.beta2 ** self.t
        updated = []
        for i, (p, grad) in enumerate(zip(params, grads)):
            g = grad + self.weight_decay * p if self.weight_decay else grad
            self.exp_avg[i] = self.beta1 * self.exp_avg[i] + (1.0 - self.beta1) * g
            self.exp_avg_sq[i] = self.beta2 * self.exp_avg_sq[i] + (1.0 - self.beta2) * g * g
            denominator = np.sqrt(self.exp_avg_sq[i]) / np.sqrt(bias_correction2) + self.eps
            updated.append(p - self.learning_rate / bias_correction1 * self.exp_avg[i] / denominator)
        return updated


def make_optimizer(optimizer, *, learning_rate, momentum=0.0, nesterov=False, weight_decay=0.0,
                   betas=(0.9, 0.999), eps=1e-8):
    """Return the reference optimizer for Network's optimizer keywords."""
    if optimizer == "sgd":
        return SGD(learning_rate, momentum, nesterov, weight_decay)
    if optimizer == "adam":
        return Adam(learning_rate, betas, eps, weight_decay)
    raise KeyError(optimizer)


class ReferenceNetwork:
    """The reference counterpart of Network: same keywords, weights given explicitly."""

    def __init__(self, weights, activations, loss, *, optimizer="sgd", learning_rate=0.01,
                 momentum=0.0, nesterov=False, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8):
        self.weights = [(np.array(W, dtype=np.float64), np.array(b, dtype=np.float64))
                        for W, b in weights]
        self.activations = list(activations)
        self.loss = loss
        self.optimizer = make_optimizer(optimizer, learning_rate=learning_rate, momentum=momentum,
                                        nesterov=nesterov, weight_decay=weight_decay,
                                        betas=betas, eps=eps)

    def predict(self, x):
        return predict(self.weights, self.activations, x)

    def gradients(self, x, y):
        return loss_and_gradients(self.weights, self.activations, self.loss, x, y)

    def train_step(self, x, y):
        """Apply one optimizer step; return the batch loss before it."""
        value, gradients = self.gradients(x, y)
        params = [array for pair in self.weights for array in pair]
        grads = [array for pair in gradients for array in pair]
        updated = self.optimizer.step(params, grads)
        self.weights = list(zip(updated[0::2], updated[1::2]))
        return value
