"""The same network in PyTorch (float64), for forward, gradient and trajectory comparisons.

Import this only after `pytest.importorskip("torch", ...)`. nnserve stores W as
(n_in, n_out); torch.nn.Linear stores weight as (n_out, n_in), so weights cross over
transposed. The losses are written to nnserve's definitions: the batch mean of a
per-sample loss summed over the outputs.
"""

import numpy as np
import torch
import torch.nn.functional as F


def _activation(name, z):
    if name == "identity":
        return z
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "tanh":
        return torch.tanh(z)
    if name == "relu":
        return F.relu(z)
    if name == "leaky_relu":
        return F.leaky_relu(z, negative_slope=0.01)
    if name == "softmax":
        return torch.softmax(z, dim=1)
    raise KeyError(name)


class TorchMirror:
    """torch.nn.Linear layers holding given weights, with nnserve's activations and losses."""

    def __init__(self, weights, activations, loss):
        self.layers = []
        for W, b in weights:
            n_in, n_out = W.shape
            layer = torch.nn.Linear(n_in, n_out, dtype=torch.float64)
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T, dtype=np.float64)))
                layer.bias.copy_(torch.from_numpy(np.asarray(b, dtype=np.float64)))
            self.layers.append(layer)
        self.activations = list(activations)
        self.loss_name = loss

    def parameters(self):
        """weight, bias of each layer in order, as torch.optim expects them."""
        return [p for layer in self.layers for p in (layer.weight, layer.bias)]

    def logits_and_outputs(self, x):
        a = torch.as_tensor(np.asarray(x, dtype=np.float64))
        z = a
        for layer, name in zip(self.layers, self.activations):
            z = layer(a)
            a = _activation(name, z)
        return z, a

    def predict(self, x):
        with torch.no_grad():
            return self.logits_and_outputs(x)[1].numpy().copy()

    def loss(self, x, y):
        """Return the batch loss as a 0-d tensor that backpropagates to the parameters."""
        z, a = self.logits_and_outputs(x)
        n_samples = z.shape[0]
        y = np.asarray(y)
        if self.loss_name == "mse":
            target = torch.as_tensor(y.astype(np.float64).reshape(a.shape))
            return ((a - target) ** 2).sum() / n_samples
        if self.loss_name == "binary_cross_entropy":
            target = torch.as_tensor(y.astype(np.float64).reshape(z.shape))
            return F.binary_cross_entropy_with_logits(z, target, reduction="sum") / n_samples
        if self.loss_name == "cross_entropy":
            if y.ndim == 1:
                return F.cross_entropy(z, torch.as_tensor(y.astype(np.int64)))
            return F.cross_entropy(z, torch.as_tensor(y.astype(np.float64)))
        raise KeyError(self.loss_name)

    def gradients(self, x, y):
        """Return (loss, [(dW (n_in, n_out), db), ...]) in nnserve's layout."""
        for p in self.parameters():
            p.grad = None
        value = self.loss(x, y)
        value.backward()
        return float(value.detach()), [(layer.weight.grad.numpy().T.copy(), layer.bias.grad.numpy().copy())
                              for layer in self.layers]

    def get_weights(self):
        return [(layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy())
                for layer in self.layers]


def make_optimizer(mirror, optimizer, *, learning_rate, momentum=0.0, nesterov=False,
                   weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8):
    """Return torch.optim.SGD or torch.optim.Adam over the mirror's parameters."""
    if optimizer == "sgd":
        return torch.optim.SGD(mirror.parameters(), lr=learning_rate, momentum=momentum,
                               nesterov=nesterov, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(mirror.parameters(), lr=learning_rate, betas=tuple(betas),
                                eps=eps, weight_decay=weight_decay)
    raise KeyError(optimizer)
