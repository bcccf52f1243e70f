"""The stateful model between the service and the kernels: `Network` (its lock, validation,
divergence guard, state and version), the batch rule and the fit loop.

`batches`, `errors`, `fit` and `results` need numpy only, so the client SDK shares them;
`Network`, `warmup` and `runtime_info` import the compiled kernels (numba) when first
named. `onnx` (Network.to_onnx / from_onnx) needs the `onnx` package, imported only when
a network is exported or imported.
"""

from .errors import (IncompatibleState, InvalidBatch, InvalidInput, InvalidOnnx, InvalidSpec,
                     InvalidState, NonFiniteStep)
from .results import Change, Evaluation, ExportedModel, Outputs, StepLoss

__all__ = ["ACTIVATIONS", "Change", "Evaluation", "ExportedModel", "INITS", "IncompatibleState",
           "InvalidBatch", "InvalidInput", "InvalidOnnx", "InvalidSpec", "InvalidState", "LOSSES",
           "Network", "NonFiniteStep", "OPTIMIZERS", "Outputs", "StepLoss", "runtime_info",
           "warmup"]

_NEEDS_KERNELS = {"Network": ".network", "warmup": ".runtime", "runtime_info": ".runtime",
                  "ACTIVATIONS": "nnserve.kernels.codes", "INITS": "nnserve.kernels.codes",
                  "LOSSES": "nnserve.kernels.codes", "OPTIMIZERS": "nnserve.kernels.codes"}


def __getattr__(name):
    module = _NEEDS_KERNELS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
