"""Mini-batch epochs, written once for every kind of model.

`fit_plan` is a generator of the calls a fit makes, ("train_step", x, y) and
("evaluate", x, y); whoever drives it sends each call's result back in and finally gets
the history. `run` drives it on anything with Network's methods: Network.fit in-process,
and a server's training jobs (service/training_jobs.py), which the SDK's RemoteModel.fit
starts. So the batches, their order and the history are the same however a model trains.

The batches and their order come from `epoch_batches` alone, and depend on no loss: the
SDK's streamed fit (RemoteModel.fit(stream=True)) sends them ahead of their losses from
its own `epoch_batches`, and drives `fit_plan` with the losses as they come back.
Numpy only (tqdm when a progress bar is shown).
"""

import math
import sys

import numpy as np

from .errors import InvalidBatch, InvalidInput

__all__ = ["check_fit", "epoch_batches", "fit_plan", "progress_bar", "run"]


def _check_count(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InvalidInput(f"{name}: got {value!r}, expected an integer >= {low}")
    return int(value)


def _rows(name, array):
    array = array if isinstance(array, np.ndarray) else np.asarray(array)
    if array.ndim == 0:
        raise InvalidBatch(f"{name}: got a scalar, expected an array with one row per sample")
    return array


def check_fit(x, y, *, epochs, batch_size, validation_data=None):
    """Return (x, y, epochs, batch_size) checked as fit_plan checks them (InvalidInput or
    InvalidBatch), for callers that must refuse before any call (a remote fit's upload)."""
    epochs = _check_count("epochs", epochs, 0)
    batch_size = _check_count("batch_size", batch_size, 1)
    x, y = _rows("x", x), _rows("y", y)
    if len(y) != len(x):
        raise InvalidBatch(f"y: got {len(y)} rows, expected {len(x)} (one per row of x)")
    if len(x) == 0:
        raise InvalidBatch("x: got 0 samples, expected at least one")
    if validation_data is not None and (
            not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2):
        raise InvalidInput(f"validation_data: got {type(validation_data).__name__}, expected "
                           "a pair (x_val, y_val)")
    return x, y, epochs, batch_size


def fit_plan(x, y, *, epochs, batch_size, shuffle=True, seed=0, validation_data=None,
             progress=None, on_epoch=None):
    """Yield the calls of `epochs` passes over (x, y) in batches; return the history.

    The batches are those of epoch_batches with the same arguments, in its order.

    Parameters
    ----------
    x : array (n_samples, n_in);  y : array with n_samples rows
    epochs : int >= 0;  batch_size : int >= 1 (the last batch of an epoch may be smaller)
    shuffle : bool
        Visit the samples in a new random order each epoch, drawn from
        numpy.random.default_rng(seed); False: in the given order.
    validation_data : (x_val, y_val), optional
        Evaluated once after each epoch.
    progress : bool or None
        Show a progress bar on stderr; None: only when stderr is a terminal.
    on_epoch : callable(epoch, history), optional
        Called after each epoch (1-based) with the history so far (a training job's events).

    Returns (as the generator's return value)
    -------
    dict
        "loss": per epoch, the mean of the batch losses weighted by batch size (each batch
        loss is taken before its update); with validation_data also "val_loss" and, for
        classification losses, "val_accuracy".
    """
    x, y, epochs, batch_size = check_fit(x, y, epochs=epochs, batch_size=batch_size,
                                         validation_data=validation_data)
    n_samples = len(x)
    if validation_data is not None:
        x_val, y_val = validation_data
    history = {"loss": []}
    if validation_data is not None:
        history["val_loss"] = []

    bar = progress_bar(progress, total=epochs * math.ceil(n_samples / batch_size))
    try:
        for epoch, batches in enumerate(epoch_batches(x, y, epochs=epochs, batch_size=batch_size,
                                                      shuffle=shuffle, seed=seed)):
            total = 0.0
            for x_batch, y_batch in batches:
                loss = yield ("train_step", x_batch, y_batch)
                total += loss * len(x_batch)
                if bar is not None:
                    bar.update()
            history["loss"].append(total / n_samples)
            postfix = {"epoch": epoch + 1, "loss": f"{history['loss'][-1]:.4g}"}
            if validation_data is not None:
                metrics = yield ("evaluate", x_val, y_val)
                history["val_loss"].append(metrics["loss"])
                postfix["val_loss"] = f"{metrics['loss']:.4g}"
                if "accuracy" in metrics:
                    history.setdefault("val_accuracy", []).append(metrics["accuracy"])
                    postfix["val_accuracy"] = f"{metrics['accuracy']:.4f}"
            if bar is not None:
                bar.set_postfix(postfix, refresh=False)
            if on_epoch is not None:
                on_epoch(epoch + 1, history)
    finally:
        if bar is not None:
            bar.close()
    return history


def epoch_batches(x, y, *, epochs, batch_size, shuffle=True, seed=0):
    """Yield one iterator per epoch of its (x_batch, y_batch), in training order.

    The batches of fit_plan (see there; x and y as check_fit returns them): batch_size
    rows each, the last of an epoch smaller when batch_size does not divide n_samples,
    rows in a new order each epoch from numpy.random.default_rng(seed) when shuffle, else
    in the given order (slices of x and y, no copy). An epoch's order is drawn when its
    iterator is yielded, so two calls with the same arguments give the same batches.
    """
    n_samples = len(x)
    rng = np.random.default_rng(seed)
    starts = range(0, n_samples, batch_size)
    for _ in range(epochs):
        order = rng.permutation(n_samples) if shuffle else None
        yield _batches(x, y, starts, batch_size, order)


def _batches(x, y, starts, batch_size, order):
    for start in starts:
        if order is None:
            yield x[start:start + batch_size], y[start:start + batch_size]
        else:
            rows = order[start:start + batch_size]
            yield x[rows], y[rows]


def progress_bar(progress, total):
    """A tqdm bar on stderr, or None when not wanted (progress=None: stderr is a terminal)."""
    if progress is None:
        progress = sys.stderr is not None and sys.stderr.isatty()
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="batch", file=sys.stderr, dynamic_ncols=True)


def run(plan, model):
    """Drive a fit_plan on a model with Network's synchronous methods; return the history."""
    try:
        name, *args = next(plan)
        while True:
            name, *args = plan.send(getattr(model, name)(*args))
    except StopIteration as done:
        return done.value
    finally:
        plan.close()  # a failed call still closes the progress bar
