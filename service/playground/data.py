"""TensorFlow Playground's data sets and input features, generated with numpy from a seed.

The generators follow TF Playground's dataset.ts (points in the square [-6, 6]^2; circle,
xor, gaussian and spiral carry the labels 0 and 1 where TF Playground has -1 and +1, for a
sigmoid output with binary cross-entropy; plane and multi-gaussian carry targets in
[-1, 1] for an identity output with mean squared error). `noise` is the page's 0-50 over
100, as in TF Playground. The same (name, seed, noise) always gives the same points.
"""

import numpy as np

__all__ = ["CLASSIFICATION", "DOMAIN", "FEATURES", "REGRESSION", "feature_matrix", "generate",
           "split"]

DOMAIN = 6.0  # inputs and heat maps cover [-DOMAIN, DOMAIN]^2
CLASSIFICATION = ("circle", "xor", "gaussian", "spiral")
REGRESSION = ("plane", "multi-gaussian")
SAMPLES = {"classification": 500, "regression": 1200}  # TF Playground's NUM_SAMPLES_*

# The input features TF Playground offers, in its order: name -> f(x1, x2).
FEATURES = {
    "x1": lambda x1, x2: x1,
    "x2": lambda x1, x2: x2,
    "x1_sq": lambda x1, x2: x1 * x1,
    "x2_sq": lambda x1, x2: x2 * x2,
    "x1_x2": lambda x1, x2: x1 * x2,
    "sin_x1": lambda x1, x2: np.sin(x1),
    "sin_x2": lambda x1, x2: np.sin(x2),
}


def feature_matrix(points, features):
    """(n, len(features)) float32: each chosen feature of the (n, 2) points, in FEATURES order."""
    x1, x2 = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    return np.stack([FEATURES[name](x1, x2) for name in FEATURES if name in features],
                    axis=1).astype(np.float32)


def _circle(rng, n, noise):
    radius = 5.0

    def ring(count, low, high):
        r = rng.uniform(low, high, count)
        angle = rng.uniform(0, 2 * np.pi, count)
        points = np.stack([r * np.sin(angle), r * np.cos(angle)], axis=1)
        shifted = points + rng.uniform(-radius, radius, (count, 2)) * noise
        return points, (np.hypot(shifted[:, 0], shifted[:, 1]) < radius * 0.5).astype(np.float32)

    inside, outside = ring(n // 2, 0, radius * 0.5), ring(n - n // 2, radius * 0.7, radius)
    return np.concatenate([inside[0], outside[0]]), np.concatenate([inside[1], outside[1]])


def _xor(rng, n, noise):
    points = rng.uniform(-5, 5, (n, 2))
    points += np.where(points > 0, 0.3, -0.3)  # TF Playground's padding off the axes
    shifted = points + rng.uniform(-5, 5, (n, 2)) * noise
    return points, (shifted[:, 0] * shifted[:, 1] >= 0).astype(np.float32)


def _gaussian(rng, n, noise):
    spread = 0.5 + noise / 0.5 * 3.5  # TF Playground's variance scale: noise 0-0.5 -> 0.5-4
    half = n // 2
    positive = rng.normal(2, spread, (half, 2))
    negative = rng.normal(-2, spread, (n - half, 2))
    return (np.concatenate([positive, negative]),
            np.concatenate([np.ones(half), np.zeros(n - half)]).astype(np.float32))


def _spiral(rng, n, noise):
    half = n // 2
    parts, labels = [], []
    for delta, label in ((0.0, 1.0), (np.pi, 0.0)):
        i = np.arange(half)
        r = i / half * 5
        t = 1.75 * i / half * 2 * np.pi + delta
        jitter = rng.uniform(-1, 1, (half, 2)) * noise
        parts.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1) + jitter)
        labels.append(np.full(half, label))
    return np.concatenate(parts), np.concatenate(labels).astype(np.float32)


def _uniform_with_noise(rng, n, noise):
    points = rng.uniform(-DOMAIN, DOMAIN, (n, 2))
    return points, points + rng.uniform(-DOMAIN, DOMAIN, (n, 2)) * noise


def _plane(rng, n, noise):
    points, shifted = _uniform_with_noise(rng, n, noise)
    return points, np.clip((shifted[:, 0] + shifted[:, 1]) / 10, -1, 1).astype(np.float32)


_BUMPS = ((-4, 2.5, 1), (0, 2.5, -1), (4, 2.5, 1), (-4, -2.5, -1), (0, -2.5, 1), (4, -2.5, -1))


def _multi_gaussian(rng, n, noise):
    points, shifted = _uniform_with_noise(rng, n, noise)
    # Each bump's label falls linearly from +-1 at its centre to 0 at distance 2; the
    # point takes the one of largest magnitude.
    values = np.stack([sign * np.clip(1 - np.hypot(shifted[:, 0] - cx, shifted[:, 1] - cy) / 2, 0, 1)
                       for cx, cy, sign in _BUMPS], axis=1)
    strongest = np.abs(values).argmax(axis=1)
    return points, values[np.arange(n), strongest].astype(np.float32)


_GENERATORS = {"circle": _circle, "xor": _xor, "gaussian": _gaussian, "spiral": _spiral,
               "plane": _plane, "multi-gaussian": _multi_gaussian}


def generate(name, seed, noise):
    """(points (n, 2) float32, targets (n,) float32) of data set `name` with noise 0-50."""
    problem = "classification" if name in CLASSIFICATION else "regression"
    rng = np.random.default_rng(seed)
    points, targets = _GENERATORS[name](rng, SAMPLES[problem], noise / 100)
    return points.astype(np.float32), targets


def split(points, targets, seed, train_percent):
    """(train, test) pairs of (points, targets): a seeded shuffle cut at train_percent."""
    order = np.random.default_rng(seed + 1).permutation(len(points))
    cut = int(round(len(points) * train_percent / 100))
    train, test = order[:cut], order[cut:]
    return (points[train], targets[train]), (points[test], targets[test])
