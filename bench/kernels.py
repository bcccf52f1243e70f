"""`nnserve bench kernels`: train-step and predict timings against PyTorch and numpy.

Every figure is a median over individually timed calls, all measured in one process and
one run, so ratios compare like with like on a noisy machine. `--openblas-coretype both`
repeats the run under a second OpenBLAS setting (bench/kernel_settings.py).
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from nnserve.bench.numpy_mlp import NumpyMLP

CASES = [
    # (label, layers, activations, loss, optimizer, dtype, batch sizes); numpy's MLP is plain
    # SGD only. Every reference computes in the case's dtype (PyTorch's model too).
    ("mnist-mlp", [784, 256, 256, 10], ["relu", "relu", "softmax"], "cross_entropy", "sgd",
     "float32", [1, 32, 256, 1024]),
    ("mnist-mlp", [784, 256, 256, 10], ["relu", "relu", "softmax"], "cross_entropy", "sgd",
     "float64", [1, 32, 256, 1024]),
    ("mnist-tanh", [784, 256, 256, 10], ["tanh", "tanh", "softmax"], "cross_entropy", "sgd",
     "float32", [1, 256]),
    ("mnist-adam", [784, 256, 256, 10], ["relu", "relu", "softmax"], "cross_entropy", "adam",
     "float32", [1, 256]),
    ("tiny", [2, 8, 8, 1], ["tanh", "tanh", "sigmoid"], "binary_cross_entropy", "sgd", "float32",
     [1, 32]),
]
LEARNING_RATE = 0.01


def _median_seconds(call, repeats, warmup=5):
    for _ in range(warmup):
        call()
    times = np.empty(repeats)
    for i in range(repeats):
        started = time.perf_counter()
        call()
        times[i] = time.perf_counter() - started
    return float(np.median(times))


def train_flops(layers, batch):
    """Forward 2BΣ(n_in·n_out), weight gradients 2BΣ, input gradients for all but layer 1."""
    products = [n_in * n_out for n_in, n_out in zip(layers[:-1], layers[1:])]
    return 2 * batch * (2 * sum(products) + sum(products[1:]))


def gemm_gflops(repeats):
    """{dtype: GFLOP/s} of sgemm and dgemm (1024^3) in the BLAS numba's np.dot calls (scipy's)."""
    from scipy.linalg.blas import dgemm, sgemm

    rng = np.random.default_rng(0)
    speeds = {}
    for dtype, gemm in (("float32", sgemm), ("float64", dgemm)):
        a = np.asfortranarray(rng.standard_normal((1024, 1024), dtype=dtype))
        b = np.asfortranarray(rng.standard_normal((1024, 1024), dtype=dtype))
        seconds = _median_seconds(lambda: gemm(1.0, a, b), max(10, repeats // 10))
        speeds[dtype] = 2 * 1024 ** 3 / seconds / 1e9
    return speeds


def blas_report():
    from nnserve.model import runtime_info

    info = runtime_info()
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    info["OPENBLAS_L2_SIZE"] = os.environ.get("OPENBLAS_L2_SIZE")
    return info


def compile_seconds():
    """Seconds for warmup() in fresh processes: cold (empty cache), then from that cache."""
    code = "import time; t = time.perf_counter(); from nnserve.model import warmup; warmup(); print(time.perf_counter() - t)"
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        return [float(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                     capture_output=True, text=True).stdout)
                for _ in ("cold", "cached")]


def _torch_model(torch, weights, activations):
    modules = []
    for (w, b), name in zip(weights, activations):
        # Built in the weights' dtype (torch.float32 or torch.float64), so they copy exactly.
        linear = torch.nn.Linear(*w.shape, dtype=getattr(torch, str(w.dtype)))
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w.T.copy()))
            linear.bias.copy_(torch.from_numpy(b))
        modules.append(linear)
        if name in ("relu", "tanh"):
            modules.append(torch.nn.ReLU() if name == "relu" else torch.nn.Tanh())
    return torch.nn.Sequential(*modules)


def _torch_calls(torch, weights, activations, loss, optimizer_name, x, y):
    model = _torch_model(torch, weights, activations)
    # Adam with nnserve's defaults (betas 0.9, 0.999; eps 1e-8), which are torch's too.
    kind = torch.optim.Adam if optimizer_name == "adam" else torch.optim.SGD
    optimizer = kind(model.parameters(), lr=LEARNING_RATE)
    tx = torch.from_numpy(x)
    if loss == "cross_entropy":
        ty, criterion, head = torch.from_numpy(y), torch.nn.CrossEntropyLoss(), torch.softmax
    else:
        ty = torch.from_numpy(y.astype(x.dtype).reshape(-1, 1))
        criterion, head = torch.nn.BCEWithLogitsLoss(), lambda z, dim: torch.sigmoid(z)

    def train():
        optimizer.zero_grad(set_to_none=True)
        criterion(model(tx), ty).backward()
        optimizer.step()

    def predict():
        with torch.no_grad():
            return head(model(tx), dim=1).numpy()

    return train, predict


def measure(repeats, cases):
    """Rows of timings, one per case and batch size; (rows, BLAS threads, torch version)."""
    from nnserve.model import Network

    try:
        import torch
    except ImportError:
        torch = None
    threads = max(pool["num_threads"] for pool in blas_report()["blas"]) if blas_report()["blas"] else 1
    if torch is not None:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    rows = []
    for label, layers, activations, loss, optimizer, dtype, batches in cases:
        for batch in batches:
            network = Network(layers, activations, loss, optimizer=optimizer,
                              learning_rate=LEARNING_RATE, dtype=dtype)
            x = rng.standard_normal((batch, layers[0]), dtype=dtype)
            if loss == "cross_entropy":
                y = rng.integers(0, layers[-1], batch)
                one_hot = np.eye(layers[-1], dtype=dtype)[y]
            else:
                y = rng.integers(0, 2, batch)
                one_hot = y.astype(dtype).reshape(-1, 1)
            row = {"case": label, "dtype": dtype, "layers": layers, "batch": batch,
                   "optimizer": optimizer,
                   "nnserve_train_us": _median_seconds(lambda: network.train_step(x, y), repeats) * 1e6,
                   "nnserve_predict_us": _median_seconds(lambda: network.predict(x), repeats) * 1e6}
            if optimizer == "sgd":
                reference = NumpyMLP(network.get_weights(), activations, LEARNING_RATE)
                row["numpy_train_us"] = _median_seconds(lambda: reference.train_step(x, one_hot),
                                                        repeats) * 1e6
                row["numpy_predict_us"] = _median_seconds(lambda: reference.predict(x), repeats) * 1e6
            if torch is not None:
                train, predict = _torch_calls(torch, network.get_weights(), activations, loss,
                                              optimizer, x, y)
                row["torch_train_us"] = _median_seconds(train, repeats) * 1e6
                row["torch_predict_us"] = _median_seconds(predict, repeats) * 1e6
                row["train_speedup_vs_torch"] = row["torch_train_us"] / row["nnserve_train_us"]
                row["predict_speedup_vs_torch"] = row["torch_predict_us"] / row["nnserve_predict_us"]
            row["train_gflops"] = train_flops(layers, batch) / row["nnserve_train_us"] / 1e3
            rows.append(row)
    return rows, threads, torch.__version__ if torch is not None else None


def _format_table(rows, gemm):
    """One line per row; "of gemm" is the train step's GFLOP/s over gemm[row's dtype]."""
    header = ("case", "dtype", "batch", "train us", "torch us", "numpy us", "x torch",
              "predict us", "torch us", "numpy us", "x torch", "GFLOP/s", "of gemm")
    lines = ["  ".join(f"{h:>10}" for h in header)]
    for row in rows:
        def fmt(key, spec="10.1f"):
            return format(row[key], spec) if key in row else f"{'-':>10}"
        lines.append("  ".join([
            f"{row['case']:>10}", f"{row['dtype']:>10}", f"{row['batch']:>10}",
            fmt("nnserve_train_us"), fmt("torch_train_us"), fmt("numpy_train_us"),
            fmt("train_speedup_vs_torch", "10.2f"), fmt("nnserve_predict_us"),
            fmt("torch_predict_us"), fmt("numpy_predict_us"), fmt("predict_speedup_vs_torch", "10.2f"),
            fmt("train_gflops"), f"{row['train_gflops'] / gemm[row['dtype']]:>10.0%}"]))
    return "\n".join(lines)


def _kernels_blas_line(blas):
    """The BLAS the kernels call (scipy's) as threadpoolctl reports it, and the variables
    OpenBLAS read when it loaded: `architecture` is the kernel that ran."""
    settings = " ".join(f"{name}={blas[name] or 'unset'}"
                        for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    pool = next((pool for pool in blas["blas"] if pool["used_by_kernels"]), None)
    if pool is None:
        return f"kernels' BLAS: not reported (threadpoolctl missing); {settings}"
    return (f"kernels' BLAS: {pool['internal_api']} {pool['version']}, architecture "
            f"{pool['architecture']}, {pool['num_threads']} threads; {settings}")


def measure_run(repeats, cases):
    """Measure `cases` in this process, print the table under its header; return the figures."""
    from nnserve.model import warmup

    warmup()
    rows, threads, torch_version = measure(repeats, cases)
    # After the cases: right after a multi-threaded 1024^3 sgemm, the first case's batch-1
    # calls ran ~50% slower (measured), whatever that case was.
    gemm = gemm_gflops(repeats)
    blas = blas_report()
    print(_kernels_blas_line(blas))
    print(f"every BLAS: {json.dumps(blas['blas'])}")
    print(f"threads={threads}; torch={torch_version or 'not installed (torch columns skipped)'}; "
          f"sgemm {gemm['float32']:.1f} GFLOP/s, dgemm {gemm['float64']:.1f} GFLOP/s")
    print(f"medians of {repeats} calls, lr={LEARNING_RATE} (SGD unless the case says adam); each "
          f"row in its dtype, PyTorch and numpy too; of gemm: GFLOP/s over sgemm's (float32 "
          f"rows) or dgemm's (float64 rows)")
    print(_format_table(rows, gemm), flush=True)
    return {"blas": blas, "threads": threads, "torch": torch_version,
            "sgemm_gflops": gemm["float32"], "dgemm_gflops": gemm["float64"],
            "repeats": repeats, "rows": rows}


def run(args):
    cold, cached = compile_seconds()
    print(f"numba compile (fresh processes, this environment): cold {cold:.2f} s, "
          f"from cache {cached:.2f} s", flush=True)
    if args.openblas_coretype == "both":
        from nnserve.bench.kernel_settings import measure_settings

        report = {"repeats": args.repeats, "runs": measure_settings(args.repeats, CASES)}
    else:
        report = measure_run(args.repeats, CASES)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(dict(report, compile_seconds={"cold": cold, "cached": cached}), handle,
                      indent=2)
    return 0
