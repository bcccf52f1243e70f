"""What a train step takes, by name: the network, the batch, a workspace, the optimizer and
the divergence guard.

    Net        params (updated in place), layer_sizes, activations
    Batch      x, targets, class_ids, loss, row_sum_tolerance: the batch and how it is
               checked and scored (read only)
    Workspace  outputs, logits, deltas, grads: the step's buffers (written)
    Optimizer  code, hyper (read), slot1, slot2 (its state, updated in place)
    Guard      bounds (advanced in place), top (read)

A Network (nnserve.model) builds its Net, Optimizer and Guard once and a Workspace once per
batch size; they hold its arrays, so what a kernel writes into them is the Network's state.
Only the Batch, the step number and `force` are new with every call.

Python hands them to network_kernels.train_step as plain tuples in these field orders, and
train_step names them first thing (which compiles to nothing). Not as the namedtuples
themselves: numba's dispatcher types an exact tuple in C from a fingerprint of its items,
but any other object, a namedtuple included, through Python's typeof, item by item
(measured, numba 0.68, calling a kernel with one structure of 5 arrays and 2 scalars:
0.51 us as a tuple, 1.23 us as a namedtuple). Nor as numba.experimental.structref: its
proxies are typed through Python's typeof too (0.65 us for the same fields), and built by
a jitted constructor that numba does not cache on disk, so every process compiles it again.

A tuple is not free either: its fingerprint covers every item, about 20 ns per array, where
an array passed on its own is typed by a table lookup (an empty kernel with train_step's
arguments: 0.99 us as twenty, 1.29 us as five tuples and two scalars). Half of that is paid
back on the Python side (seven arguments instead of twenty, no unpacking, no wrapper
method): a [2, 8, 8, 1] batch-1 step went from 6.74 to 6.93 us.
predict, evaluate and layer_activations, called per request with 4 to 8 arguments and
nothing to save, keep their flat arguments (bundled, predict took 0.1 to 0.2 us more of
that network's 3.3 us) and build the structures inside, where they cost nothing.
Inside the kernels a namedtuple is a tuple type with attribute names; its type depends on
its items' types only, so the structures add no compiled variant beyond the dtype's.
"""

from collections import namedtuple

__all__ = ["Batch", "Guard", "Net", "Optimizer", "Workspace"]

# params: the flat parameter vector (network_kernels' docstring has its layout);
# layer_sizes, activations: int64 (an activation code per layer after the input).
Net = namedtuple("Net", "params layer_sizes activations")

# targets (n, n_out) and class_ids (n,) int64, one of them empty (nnserve.model.batches);
# loss: its code (codes.LOSSES); row_sum_tolerance: how far from 1 a cross-entropy target
# row may sum.
Batch = namedtuple("Batch", "x targets class_ids loss row_sum_tolerance")

# Every layer's activations and dz, layer after layer (n_samples x width each), the last
# layer's z, and the gradient in the parameters' layout (a gradients-only step's result).
Workspace = namedtuple("Workspace", "outputs logits deltas grads")

# code: the optimizer's (codes.OPTIMIZERS) or network_kernels.GRADIENTS_ONLY; hyper: the
# float64 vector indexed by optimizers.LEARNING_RATE etc.; slot1, slot2: its state in the
# parameters' layout (SGD with momentum: slot1; Adam: both), an unused one empty.
Optimizer = namedtuple("Optimizer", "code hyper slot1 slot2")

# bounds: float64 upper bounds indexed by guard.PARAMS, SLOT1, SLOT2; top: the magnitude no
# value may reach (guard.py).
Guard = namedtuple("Guard", "bounds top")
