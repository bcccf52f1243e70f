"""What the pages draw, as JSON-able dicts: a session's state (settings, data, model) and
its frames (epoch, losses, weights, heat maps).

A frame's heat maps come from ONE forward pass over the grid (Network.layer_activations:
every layer at once, so what the page shows is what the model computes), quantized to a
byte per value over [-1, 1] (TF Playground's colour scale; a classifier's output
probabilities p are shown as 2p - 1; the page's big map is the first output's) and sent base64 layer by layer. Frames are cached per
(revision, version): any number of pages share one computation per weights version.
"""

import base64
import threading

import numpy as np

from .data import CLASSIFICATION, REGRESSION
from .settings import LEARNING_RATES, MAX_LAYERS, REGULARIZATION_RATES

__all__ = ["FrameCache", "state"]

# What the page's controls offer.
CHOICES = {"datasets": CLASSIFICATION + REGRESSION, "learning_rates": LEARNING_RATES,
           "regularization_rates": REGULARIZATION_RATES, "max_layers": MAX_LAYERS}


def state(session, links):
    """The session's settings, data points and model, for a page that (re)draws them all;
    `links`: Playground.links (where the page's commands and Grafana link point)."""
    with session.lock:
        entry = session.entry
        epoch, history = session.progress()
        return {"model": {"id": entry.id, "name": entry.name, "spec": entry.network.spec},
                "key": session.key, "revision": session.revision, "settings": session.settings,
                "owned": session.owned, "trainable": session.trainable,
                "points": session.points, "epoch": epoch, "playing": session.playing,
                "history": history, "choices": CHOICES, "links": links}


def _quantized(values):
    return base64.b64encode(np.rint((np.clip(values, -1, 1) + 1) * 127.5).astype(np.uint8).tobytes()).decode()


class FrameCache:
    """The latest frame of each session, computed once per weights version."""

    def __init__(self, grid):
        self._grid = grid  # points per side of the heat maps
        self._lock = threading.Lock()  # one computation at a time per server is plenty
        self._frames = {}  # session key -> ((revision, version), frame)

    def frame(self, session, history_from=0):
        """The frame of the session now, with the per-epoch losses from epoch index
        `history_from` on."""
        with session.lock:
            entry, grid, revision = session.entry, session.grid, session.revision
            playing = session.playing
            epoch, history = session.progress()
            classification = session.settings["problem"] == "classification"
        network = entry.network
        key = (revision, network.version)
        with self._lock:
            cached = self._frames.get(session.key)
            if cached is None or cached[0] != key:
                cached = (key, self._pictures(network, grid, classification))
                self._frames[session.key] = cached
        pictures = cached[1]
        return {"revision": revision, "epoch": epoch, "playing": playing,
                "train_loss": history["loss"][-1] if history["loss"] else None,
                "test_loss": history["val_loss"][-1] if history["val_loss"] else None,
                "grid": self._grid, "history": {name: values[history_from:] for name, values in history.items()},
                **pictures}

    @staticmethod
    def _pictures(network, grid, classification):
        weights = network.get_weights()
        pictures = {"version": network.version,
                    "weights": [{"w": w.round(4).tolist(), "b": b.round(4).tolist()}
                                for w, b in weights],
                    "heatmaps": None}
        if grid is not None and grid.shape[1] == network.n_inputs:
            layers, version = network.layer_activations(grid)
            if classification:  # probabilities, one map per output
                layers[-1] = 2 * layers[-1] - 1
            pictures["heatmaps"] = [_quantized(layer.T) for layer in layers]  # neuron by neuron
            pictures["version"] = version
        return pictures

