"""Durable models under `--state-dir` (being split into format, store, writer and restore)."""

from .writer import (FORMAT, NO_CHECKPOINTS, VERSION_GAP_AFTER_CRASH, Checkpointer, CheckpointStore,
                     CorruptCheckpoint, decode, encode, open_checkpoints, restore)

__all__ = ["FORMAT", "NO_CHECKPOINTS", "VERSION_GAP_AFTER_CRASH", "CheckpointStore", "Checkpointer",
           "CorruptCheckpoint", "decode", "encode", "open_checkpoints", "restore"]
