"""The divergence guard's decisions: a train step whose loss or updated state would not be
finite is refused, and the network is left exactly as it was.

The kernel applies a step in place only when the bounds kept here prove every new value
finite (nnserve.kernels.guard). When they cannot, `DivergenceGuard.settle` refreshes the
bounds from the real arrays and, if the step is still not provably safe, runs it on the
real arrays with a backup that is restored when anything came out non-finite. Only such
steps pay for a copy.
"""

import numpy as np

from nnserve.kernels import network_kernels as nk
from nnserve.kernels.guard import PARAMS, SLOT1, SLOT2

__all__ = ["DivergenceGuard"]


def _peak(array):
    return float(np.abs(array).max()) if array.size else 0.0


class DivergenceGuard:
    """Upper bounds on |params| and |each optimizer slot| (float64 `bounds`, advanced by
    the kernel with every step) and the largest magnitude any of them may reach."""

    def __init__(self, params, slots):
        self.bounds = np.zeros(3)
        # A 16x margin under the dtype's largest number, for rounding.
        self.ceiling = float(np.finfo(params.dtype).max) / 16.0
        self._arrays = (params, *slots)
        self.refresh()

    def refresh(self):
        """Set the bounds to the arrays' exact largest magnitudes (after any outside write)."""
        params, *slots = self._arrays
        self.bounds[PARAMS] = _peak(params)
        peaks = [_peak(slot) for slot in slots] + [0.0, 0.0]
        self.bounds[SLOT1], self.bounds[SLOT2] = peaks[0], peaks[1]

    def settle(self, run_step):
        """Decide a step the kernel could not prove finite from its bounds; return whether it
        was applied. run_step(force) runs the kernel's step and returns its status."""
        self.refresh()
        if run_step(False) == nk.OK:
            return True
        backup = [array.copy() for array in self._arrays]
        run_step(True)
        applied = all(np.isfinite(array).all() for array in self._arrays)
        if not applied:
            for array, saved in zip(self._arrays, backup):
                array[:] = saved
        self.refresh()
        return applied
