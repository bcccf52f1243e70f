"""nnserve's numeric core: Numba kernels for feed-forward networks, and `Network`."""

from . import compile_cache

# Before the kernel modules below are imported: their @njit(cache=True) reads it.
CACHE_DIR = compile_cache.configure()

from .codes import ACTIVATIONS, INITS, LOSSES, OPTIMIZERS  # noqa: E402
from .guard import NonFiniteStep  # noqa: E402
from .network import Network  # noqa: E402
from .runtime import runtime_info, warmup  # noqa: E402

__all__ = ["ACTIVATIONS", "CACHE_DIR", "INITS", "LOSSES", "NonFiniteStep", "OPTIMIZERS", "Network",
           "runtime_info", "warmup"]
