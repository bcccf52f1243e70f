"""The results of a model's calls, each carrying the weights version it acted on.

They are the plain values the calls always returned (a float loss, an output array, a
metrics dict), so code that ignores versions reads them as before; code that needs the
version (the service, training jobs, the SDK's consistent chunking) reads `.version` from
the same call, with no second look at the model in between. Numpy only: the SDK returns
them too.
"""

from typing import NamedTuple

import numpy as np

__all__ = ["Change", "Evaluation", "ExportedModel", "Outputs", "StepLoss"]


class StepLoss(float):
    """A train step's batch loss (before the update), with the `step` count and the weights
    `version` the step produced."""

    __slots__ = ("step", "version")

    def __new__(cls, loss, step, version):
        result = super().__new__(cls, loss)
        result.step = step
        result.version = version
        return result


class Outputs(np.ndarray):
    """Output activations (n_samples, n_out), with the weights `version` that computed them.

    Views and slices keep the version; arithmetic on the outputs gives plain arrays, which
    no version computed.
    """

    @classmethod
    def of(cls, array, version):
        outputs = array.view(cls)
        outputs.version = version
        return outputs

    def __array_finalize__(self, source):
        self.version = getattr(source, "version", None)

    def __array_wrap__(self, array, context=None, return_scalar=False):
        plain = array.view(np.ndarray)
        return plain[()] if return_scalar else plain


class Evaluation(dict):
    """{"loss": ..., ["accuracy": ...]} with the weights `version` that computed it."""

    __slots__ = ("version",)

    def __init__(self, metrics, version):
        super().__init__(metrics)
        self.version = version


class Change(NamedTuple):
    """What a write left: the step count and the weights version it produced."""

    step: int
    version: int


class ExportedModel(bytes):
    """A serialized model (Network.to_onnx's ONNX bytes), with the `step` count and the
    weights `version` it holds."""

    def __new__(cls, data, step, version):
        result = super().__new__(cls, data)
        result.step = step
        result.version = version
        return result
