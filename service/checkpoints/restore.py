"""Load the checkpoints of a state directory into the registry at start.

Versions never name two different weights, even across a crash: a shutdown that saved
every model leaves DIR/.clean-shutdown behind (removed again at start). Without it, the
last run may have handed out versions past its last checkpoints, so restored models
continue VERSION_GAP_AFTER_CRASH versions later.
"""

import logging
import time

from ..errors import InvalidArgument, ServiceError
from .format import CorruptCheckpoint
from .writer import NO_CHECKPOINTS

__all__ = ["VERSION_GAP_AFTER_CRASH", "restore", "restore_training_data"]

logger = logging.getLogger(__name__)

# More versions than one run could hand out between two checkpoints (2**32: a million
# train steps a second for over an hour), and few enough that int64 lasts 2**31 crashes.
VERSION_GAP_AFTER_CRASH = 1 << 32


def restore(registry, checkpointer):
    """Load every checkpoint of checkpointer.store into the registry; return the count loaded.

    A damaged file is logged by name and renamed to *.corrupt; a model the registry refuses
    (a limit lowered since, a name taken) is logged and its file left in place.
    """
    if checkpointer is NO_CHECKPOINTS:
        return 0
    store = checkpointer.store
    started = time.perf_counter()
    records = []
    for path in store.paths():
        try:
            records.append((path, store.read(path)))
        except CorruptCheckpoint as error:
            _report_corrupt(store, path, error)
    records.sort(key=lambda item: (item[1]["create_time_ns"], item[1]["id"]))
    if records and not store.last_shutdown_clean:
        logger.warning("the last run did not shut down cleanly: restored models continue %d "
                       "versions on", VERSION_GAP_AFTER_CRASH,
                       extra={"event": "versions_skipped", "gap": VERSION_GAP_AFTER_CRASH})
        for _, record in records:
            record["version"] += VERSION_GAP_AFTER_CRASH
    loaded = 0
    for path, record in records:
        try:
            registry.restore(record)
        except InvalidArgument as error:  # verified, yet not a valid model: damaged all the same
            _report_corrupt(store, path, error)
        except ServiceError as error:
            logger.error("checkpoint %s not restored: %s", path.name, error, extra={
                "event": "checkpoint_not_restored", "file": path.name})
        else:
            loaded += 1
    logger.info("restored %d models", loaded, extra={
        "event": "models_restored", "models": loaded, "directory": str(store.directory),
        "seconds": round(time.perf_counter() - started, 3)})
    return loaded


def _report_corrupt(store, path, error):
    target = store.quarantine(path)
    logger.error("checkpoint %s is corrupt, skipped: %s", path.name, error, extra={
        "event": "checkpoint_corrupt", "file": path.name, "moved_to": target.name})


def restore_training_data(datasets, jobs, dataset_files, job_files):
    """Load the datasets and job records of a state directory (datasets first: jobs name
    them); return (datasets loaded, jobs loaded). Damaged files are quarantined; a dataset
    that no longer fits the limits is logged and its file left in place."""
    loaded = 0
    records = dataset_files.read_all(dataset_files.read)
    for path, record in sorted(records, key=lambda item: (item[1]["create_time_ns"], item[1]["id"])):
        try:
            dataset = datasets.restore(record)
        except ServiceError as error:
            logger.error("dataset %s not restored: %s", path.name, error, extra={
                "event": "checkpoint_not_restored", "file": path.name})
            continue
        if dataset.sha256 != record["sha256"]:  # the member checksum passed; this cannot differ
            datasets.delete(dataset.id)
            dataset_files.quarantine(path, "sha256: got other bytes than at upload")
            continue
        loaded += 1
    job_records = job_files.read_all(job_files.read)
    for _, record in sorted(job_records, key=lambda item: (item[1]["create_time_ns"], item[1]["id"])):
        jobs.restore(record)
    logger.info("restored %d datasets and %d training jobs", loaded, len(job_records), extra={
        "event": "training_data_restored", "datasets": loaded, "jobs": len(job_records)})
    return loaded, len(job_records)
