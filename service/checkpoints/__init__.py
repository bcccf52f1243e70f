"""Durable models: one checkpoint file per model under `--state-dir`, written atomically.

- format.py: the .npz file of one model and its checksum (`encode`, `decode`).
- store.py: the directory: atomic writes, the lock, quarantine, the clean-shutdown mark.
- writer.py: when to write (`Checkpointer`, one background thread).
- restore.py: loading every file into the registry at start.
"""

from .format import FORMAT, CorruptCheckpoint, decode, encode
from .restore import VERSION_GAP_AFTER_CRASH, restore
from .store import CheckpointStore
from .writer import NO_CHECKPOINTS, Checkpointer, open_checkpoints

__all__ = ["FORMAT", "NO_CHECKPOINTS", "VERSION_GAP_AFTER_CRASH", "CheckpointStore", "Checkpointer",
           "CorruptCheckpoint", "decode", "encode", "open_checkpoints", "restore"]
