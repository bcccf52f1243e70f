"""What the model layer raises when it refuses something; nothing changed when it does.

The service maps exactly these to status codes (service/registry.py): `InvalidInput` and
its kinds to INVALID_ARGUMENT, `IncompatibleState` and `NonFiniteStep` to
FAILED_PRECONDITION. Any other exception out of the model layer is a bug (INTERNAL).
Numpy only: the client SDK raises the same types for what it checks before sending.
"""

__all__ = ["IncompatibleState", "InvalidBatch", "InvalidInput", "InvalidOnnx", "InvalidSpec",
           "InvalidState", "NonFiniteStep"]


class InvalidInput(ValueError):
    """Refused input, with a message "name: got X, expected Y"."""


class InvalidSpec(InvalidInput):
    """A network spec (layers, activations, loss, hyper-parameters) that builds no network."""


class InvalidBatch(InvalidInput):
    """x or y of a batch (or a dataset) breaks the batch rule (nnserve.model.batches)."""


class InvalidState(InvalidInput):
    """Weights or a state that do not fit the network (shapes, dtypes, values, keys)."""


class IncompatibleState(InvalidState):
    """A state exported from a network of another structure (layers, activations, loss,
    optimizer or dtype): well-formed, but not loadable into this one."""


class InvalidOnnx(InvalidInput):
    """An ONNX model that does not parse, or whose graph is no chain of dense layers nnserve
    can hold (nnserve.model.onnx); the message names the first node or part it refuses."""


class NonFiniteStep(ArithmeticError):
    """A train step would make the loss or the network's state non-finite; nothing changed."""
