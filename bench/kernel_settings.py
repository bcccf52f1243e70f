"""`nnserve bench kernels --openblas-coretype both`: the table under two OpenBLAS settings.

OpenBLAS reads OPENBLAS_CORETYPE (which kernel to run: `Haswell` caps it at AVX2) once,
when the library loads, so each setting needs a process of its own. Both runs are child
processes started alike, one after the other, whose environments differ in
OPENBLAS_CORETYPE alone:
- the environment as it is (as CI has it);
- the other: OPENBLAS_CORETYPE unset if the environment sets it (OpenBLAS picks the
  kernel for the CPU), else set to ALTERNATIVE_CORETYPE.
OPENBLAS_L2_SIZE stays as the environment has it in both: OpenBLAS takes it instead of
cpuid's L2 size (for its blocking), which is a fact about the machine, not a kernel
choice; changing it too would mix two effects in one comparison.
"""

import json
import os
import subprocess
import sys
import tempfile

from nnserve.bench import kernels

ALTERNATIVE_CORETYPE = "Haswell"  # OpenBLAS's AVX2 kernels, the usual cap


def settings(environ):
    """[(label, environment)] of the two runs: `environ` as it is, then the other setting."""
    other = dict(environ)
    if other.pop("OPENBLAS_CORETYPE", None) is None:
        other["OPENBLAS_CORETYPE"] = ALTERNATIVE_CORETYPE
    return [("environment", dict(environ)), ("other", other)]


def measure_settings(repeats, cases):
    """Run `cases` under each setting in a child process (tables printed as they come);
    return the runs' figures, each with its setting's label."""
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for number, (label, environ) in enumerate(settings(os.environ), 1):
            variables = " ".join(f"{name}={environ.get(name) or 'unset'}"
                                 for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
            print(f"== run {number} of 2, {label}: {variables} ==", flush=True)
            path = os.path.join(scratch, f"run{number}.json")
            subprocess.run([sys.executable, "-m", "nnserve.bench.kernel_settings", str(repeats),
                            json.dumps(cases), path], env=environ, check=True)
            with open(path) as handle:
                runs.append(dict(json.load(handle), setting=label))
    return runs


if __name__ == "__main__":  # a child of measure_settings: repeats, cases (JSON), output path
    result = kernels.measure_run(int(sys.argv[1]), json.loads(sys.argv[2]))
    with open(sys.argv[3], "w") as handle:
        json.dump(result, handle)
