"""Where numba caches the compiled kernels.

Numba keys a cached function by its own source file only: a caller whose callee changed in
another file would load stale machine code. The cache therefore lives in a folder named
after a hash of every file of this package (compiled code and the constants it freezes in,
nothing else: the model layer lives in nnserve.model, so editing it recompiles nothing),
under NUMBA_CACHE_DIR when set, else under the user's cache folder (so it also works when
the installed package is read-only).
"""

import hashlib
import os
from pathlib import Path

import numba


def kernel_sources_digest():
    digest = hashlib.sha256(numba.__version__.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def configure():
    """Point numba's cache at this source version's folder; call before any @njit runs."""
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "nnserve", "numba")
    folder = os.path.join(base, f"nnserve-{kernel_sources_digest()}")
    numba.config.CACHE_DIR = folder
    return folder
