"""A plain numpy MLP (SGD, in its weights' dtype): what a user would write without nnserve.

Used only as a speed reference by `nnserve bench kernels`; correctness references live in
tests/.
"""

import numpy as np


def _activate(z, name):
    if name == "relu":
        return np.maximum(z, 0, out=z)
    if name == "tanh":
        return np.tanh(z, out=z)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return z


def _derivative(a, name):
    if name == "relu":
        return (a > 0).astype(a.dtype)
    if name == "tanh":
        return 1.0 - a * a
    if name == "sigmoid":
        return a * (1.0 - a)
    return np.ones_like(a)


class NumpyMLP:
    def __init__(self, weights, activations, learning_rate):
        self.weights = [(w.copy(), b.copy()) for w, b in weights]
        self.activations = activations
        self.learning_rate = learning_rate

    def predict(self, x):
        a = x
        for (w, b), name in zip(self.weights, self.activations):
            a = _activate(a @ w + b, name)
        return a

    def train_step(self, x, targets):
        """targets: one-hot rows (softmax/cross-entropy) or 0/1 columns (sigmoid/bce)."""
        outputs = [x]
        for (w, b), name in zip(self.weights, self.activations):
            outputs.append(_activate(outputs[-1] @ w + b, name))
        n = x.shape[0]
        dz = (outputs[-1] - targets) / n
        for layer in range(len(self.weights) - 1, -1, -1):
            w, b = self.weights[layer]
            grad_w = outputs[layer].T @ dz
            grad_b = dz.sum(axis=0)
            if layer > 0:
                dz = (dz @ w.T) * _derivative(outputs[layer], self.activations[layer - 1])
            w -= self.learning_rate * grad_w
            b -= self.learning_rate * grad_b
