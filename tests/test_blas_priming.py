"""prime_blas (nnserve.model.runtime) on the kernels' real OpenBLAS, in fresh processes: it
writes the packing buffers of as many concurrent callers as asked, and changes no result."""

import json
import subprocess
import sys
import textwrap

# Runs in a fresh process: one-thread BLAS calls, as the server makes them, and nothing
# primed yet (constructing a Network primes one buffer, so the kernels are called directly).
SCRIPT = textwrap.dedent("""
    import json, re, sys, threading
    import numpy as np
    from threadpoolctl import threadpool_limits
    import scipy.linalg.cython_blas
    threadpool_limits(1, user_api="blas")
    from nnserve.kernels.blas import matmul
    from nnserve.model.runtime import prime_blas

    def resident_kib_in_large_mappings():
        # OpenBLAS maps each packing buffer anonymously, 32 MiB (adjacent ones may merge).
        total = 0
        for block in re.split(r"\\n(?=[0-9a-f]+-[0-9a-f]+ )", open("/proc/self/smaps").read()):
            fields = block.split("\\n")[0].split()
            size = int(re.search(r"^Size:\\s+(\\d+)", block, re.M).group(1))
            if len(fields) == 5 and size >= 32 * 1024:
                total += int(re.search(r"^Rss:\\s+(\\d+)", block, re.M).group(1))
        return total

    rng = np.random.default_rng(7)
    x = rng.standard_normal((256, 784)).astype(np.float32)
    weights = rng.standard_normal((784, 256)).astype(np.float32)

    def products_from(threads):
        outputs = [np.empty((256, 256), np.float32) for _ in range(threads)]
        together = threading.Barrier(threads)
        def run(out):
            together.wait()
            matmul(x, weights, out)
        workers = [threading.Thread(target=run, args=(out,)) for out in outputs]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return outputs

    callers = int(sys.argv[1])
    before = products_from(callers)
    resident_before = resident_kib_in_large_mappings()
    prime_blas(callers)
    resident_after = resident_kib_in_large_mappings()
    after = products_from(callers)
    print(json.dumps({
        "grown_kib": resident_after - resident_before,
        "same_bits": all(np.array_equal(before[0], out) for out in before + after),
    }))
""")


def run_fresh(callers):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(callers)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_priming_writes_a_buffer_per_concurrent_caller_and_changes_no_bits():
    one, four = run_fresh(1), run_fresh(4)
    # The products before priming took a buffer per thread and wrote part of it (336 KiB
    # each, measured); priming writes the rest of the largest packed block (480 KiB in all
    # on OpenBLAS's Haswell kernel) in as many buffers as callers: four grow four times as
    # much as one, where callers sharing a buffer would grow it once.
    assert one["grown_kib"] > 0, one
    assert four["grown_kib"] >= 3 * one["grown_kib"], (one, four)
    assert one["same_bits"] and four["same_bits"], (one, four)
