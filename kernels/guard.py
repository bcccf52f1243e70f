"""The divergence guard's compiled half: how large a gradient an update may take, and the
bounds moved past an update (the model layer's guard.py keeps the bounds and decides).

Keeping a copy of the parameters to roll back to would double the memory a small-batch
step streams (measured: 96 -> 190 us at batch 1 for [784, 256, 256, 10]). Instead the
guard keeps upper bounds on |parameter| and on each optimizer slot (`bounds`), and before
each update the kernel bounds the gradient from the layer inputs and deltas. The step is
applied in place only when those bounds prove every new value finite, with a 16x margin
under the dtype's largest number for rounding (the `top` it is given).
"""

import numpy as np

from .codes import ADAM
from .jit import kernel
from .optimizers import BETA1, EPS, L1, LEARNING_RATE, MOMENTUM, NESTEROV, WEIGHT_DECAY

# Positions in the float64 `bounds` vector: upper bounds on |params|, |slot 1|, |slot 2|.
PARAMS, SLOT1, SLOT2 = range(3)


@kernel()
def gradient_limit(optimizer, hyper, bounds, step, top):
    """The largest gradient magnitude for which update number `step` stays under `top`."""
    lr = hyper[LEARNING_RATE]
    momentum = hyper[MOMENTUM]
    decay_term = hyper[WEIGHT_DECAY] * bounds[PARAMS] + hyper[L1]  # |l1 * sign(W)| <= l1
    headroom = (top - bounds[PARAMS]) / lr
    if optimizer == ADAM:
        # |m| <= max past |g| (m is a running mix of them and 0), v likewise for g^2, and
        # the update is at most lr / (1 - beta1^t) * |m| / eps.
        moment_room = headroom * hyper[EPS] * (1.0 - hyper[BETA1] ** step)
        if bounds[SLOT1] > moment_room:
            return -1.0
        effective = min(moment_room, np.sqrt(top))
    elif momentum != 0.0:
        carried = momentum * bounds[SLOT1]
        if hyper[NESTEROV] != 0.0:
            effective = min((headroom - momentum * carried) / (1.0 + momentum), top - carried)
        else:
            effective = min(headroom - carried, top - carried)
    else:
        effective = headroom
    return effective - decay_term


@kernel()
def advance(optimizer, hyper, bounds, gradient_bound, step):
    """Move the bounds past update number `step`, whose gradients were <= gradient_bound."""
    lr = hyper[LEARNING_RATE]
    momentum = hyper[MOMENTUM]
    effective = gradient_bound + hyper[WEIGHT_DECAY] * bounds[PARAMS] + hyper[L1]
    if optimizer == ADAM:
        bounds[SLOT1] = max(bounds[SLOT1], effective)
        bounds[SLOT2] = max(bounds[SLOT2], effective * effective)
        bounds[PARAMS] += lr / (1.0 - hyper[BETA1] ** step) * bounds[SLOT1] / hyper[EPS]
    elif momentum != 0.0:
        velocity = momentum * bounds[SLOT1] + effective
        bounds[SLOT1] = velocity
        if hyper[NESTEROV] != 0.0:
            bounds[PARAMS] += lr * (effective + momentum * velocity)
        else:
            bounds[PARAMS] += lr * velocity
    else:
        bounds[PARAMS] += lr * effective
