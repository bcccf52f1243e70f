"""nnserve's numeric core: Numba kernels for feed-forward networks, pure functions on arrays.

Nothing here holds state or a lock; the model layer (nnserve.model) composes these
kernels into a Network.
"""

from . import compile_cache

# Before any kernel module is imported: their @njit(cache=True) reads it.
CACHE_DIR = compile_cache.configure()

__all__ = ["CACHE_DIR"]
