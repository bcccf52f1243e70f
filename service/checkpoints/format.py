"""The checkpoint file format: one NumPy .npz archive per model, verified whole on reading.

The file (`DIR/<model id>.npz`) holds the members `encode` returns; the store writes them
with `np.savez` and reads them with `allow_pickle=False`, so loading a checkpoint never
runs code. The members:

    meta          uint8 bytes of a JSON object: format, id, name, spec, step, version,
                  create_time_ns, update_time_ns, slots (the optimizer slot names)
    weights.I.W   layer I's weights (n_in, n_out); weights.I.b its biases (n_out,)
    slot.NAME.I.W, slot.NAME.I.b   the optimizer slot NAME, laid out like the weights
    sha256        32 bytes: SHA-256 over every other member's name, dtype, shape and bytes

Members whose checksum or content does not match are `CorruptCheckpoint`, never
half-decoded.
"""

import hashlib
import json

import numpy as np

__all__ = ["FORMAT", "CorruptCheckpoint", "decode", "encode", "members_digest"]

FORMAT = 1
_META_KEYS = {"format": int, "id": str, "name": str, "spec": dict, "step": int, "version": int,
              "create_time_ns": int, "update_time_ns": int, "slots": list}


class CorruptCheckpoint(Exception):
    """A checkpoint file that cannot be read whole or does not verify; says why."""


def members_digest(arrays):
    """SHA-256 over the members' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        header = json.dumps([name, array.dtype.str, list(array.shape)]).encode()
        digest.update(len(header).to_bytes(8, "little"))
        digest.update(header)
        digest.update(array.nbytes.to_bytes(8, "little"))
        digest.update(array.reshape(-1).view(np.uint8))
    return np.frombuffer(digest.digest(), dtype=np.uint8)


def encode(record):
    """Return the .npz members of a model record.

    record: {"id", "name", "spec", "step", "version", "create_time_ns", "update_time_ns",
    "weights": [(W, b), ...], "slots": {name: [(W, b), ...]}}, the arrays as
    Network.get_state() returns them.
    """
    meta = {"format": FORMAT, "slots": sorted(record["slots"])}
    meta.update({key: record[key] for key in _META_KEYS if key not in meta})
    arrays = {"meta": np.frombuffer(json.dumps(meta, allow_nan=False).encode(), dtype=np.uint8)}
    for prefix, pairs in [("weights", record["weights"])] + [
            (f"slot.{name}", record["slots"][name]) for name in meta["slots"]]:
        for i, (weights, biases) in enumerate(pairs):
            arrays[f"{prefix}.{i}.W"] = weights
            arrays[f"{prefix}.{i}.b"] = biases
    arrays["sha256"] = members_digest(arrays)
    return arrays


def _layers(arrays, prefix):
    pairs = []
    while f"{prefix}.{len(pairs)}.W" in arrays:
        i = len(pairs)
        pairs.append((arrays.pop(f"{prefix}.{i}.W"), arrays.pop(f"{prefix}.{i}.b", None)))
        if pairs[-1][1] is None:
            raise CorruptCheckpoint(f"member {prefix}.{i}.b: got nothing, expected the biases of {prefix}.{i}.W")
    return pairs


def decode(arrays):
    """Return the record of .npz members (as from `encode`); CorruptCheckpoint if they don't verify."""
    arrays = dict(arrays)
    stored = arrays.pop("sha256", None)
    if stored is None or "meta" not in arrays:
        raise CorruptCheckpoint(f"members: got {sorted(arrays)}, expected meta and sha256 among them")
    if stored.dtype != np.uint8 or stored.shape != (32,) or not np.array_equal(stored, members_digest(arrays)):
        raise CorruptCheckpoint("sha256: got a checksum that does not match the content")
    raw = arrays.pop("meta")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError) as error:
        raise CorruptCheckpoint(f"meta: got undecodable JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CorruptCheckpoint(f"meta: got format {meta.get('format') if isinstance(meta, dict) else meta!r}, "
                                f"expected {FORMAT}")
    for key, kind in _META_KEYS.items():
        if isinstance(meta.get(key), bool) or not isinstance(meta.get(key), kind):
            raise CorruptCheckpoint(f"meta.{key}: got {meta.get(key)!r}, expected a {kind.__name__}")
    record = {key: meta[key] for key in _META_KEYS if key not in ("format", "slots")}
    record["weights"] = _layers(arrays, "weights")
    record["slots"] = {name: _layers(arrays, f"slot.{name}") for name in meta["slots"]}
    if arrays:
        raise CorruptCheckpoint(f"members: got unexpected {sorted(arrays)}")
    return record
