"""nnserve's numeric core: Numba kernels for feed-forward networks, and `Network`."""

from .codes import ACTIVATIONS, INITS, LOSSES, OPTIMIZERS
from .network import Network
from .runtime import runtime_info, warmup

__all__ = ["ACTIVATIONS", "INITS", "LOSSES", "OPTIMIZERS", "Network", "runtime_info", "warmup"]
