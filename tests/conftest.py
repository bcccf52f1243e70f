import os
from pathlib import Path

# Before anything imports numba: compile once per checkout, not once per process.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "numba"))
