"""Durable models: one checkpoint file per model under `--state-dir`, written atomically.

- format.py: the .npz file of one model and its checksum (`encode`, `decode`).
- store.py: the directory: atomic writes, the lock, quarantine, the clean-shutdown mark.
- writer.py: when to write (`Checkpointer`, one background thread).
- restore.py: loading every file into the registry (and the datasets and jobs) at start.
- training_records.py: datasets and training-job records, in DIR/datasets and DIR/jobs.
"""

from .format import FORMAT, CorruptCheckpoint, decode, encode
from .restore import VERSION_GAP_AFTER_CRASH, restore, restore_training_data
from .store import CheckpointStore
from .training_records import DatasetFiles, JobFiles
from .writer import NO_CHECKPOINTS, Checkpointer, open_checkpoints

__all__ = ["FORMAT", "NO_CHECKPOINTS", "VERSION_GAP_AFTER_CRASH", "CheckpointStore", "Checkpointer",
           "CorruptCheckpoint", "DatasetFiles", "JobFiles", "decode", "encode", "open_checkpoints",
           "restore", "restore_training_data"]
