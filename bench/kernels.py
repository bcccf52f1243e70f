"""`nnserve bench kernels`: train-step and predict timings against PyTorch and numpy.

Every figure is a median over individually timed calls, all measured in one process and
one run, so ratios compare like with like on a noisy machine.
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
    # (label, layers, activations, loss, optimizer, batch sizes); numpy's MLP is plain SGD only
    ("mnist-mlp", [784, 256, 256, 10], ["relu", "relu", "softmax"], "cross_entropy", "sgd",
     [1, 32, 256, 1024]),
    ("mnist-tanh", [784, 256, 256, 10], ["tanh", "tanh", "softmax"], "cross_entropy", "sgd", [1, 256]),
    ("mnist-adam", [784, 256, 256, 10], ["relu", "relu", "softmax"], "cross_entropy", "adam", [1, 256]),
    ("tiny", [2, 8, 8, 1], ["tanh", "tanh", "sigmoid"], "binary_cross_entropy", "sgd", [1, 32]),
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


def sgemm_gflops(repeats):
    """The machine's sgemm speed through the BLAS that numba's np.dot calls (scipy's)."""
    from scipy.linalg.blas import sgemm

    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((1024, 1024), dtype=np.float32))
    b = np.asfortranarray(rng.standard_normal((1024, 1024), dtype=np.float32))
    seconds = _median_seconds(lambda: sgemm(1.0, a, b), max(10, repeats // 10))
    return 2 * 1024 ** 3 / seconds / 1e9


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
        linear = torch.nn.Linear(*w.shape)
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
        ty = torch.from_numpy(y.astype(np.float32).reshape(-1, 1))
        criterion, head = torch.nn.BCEWithLogitsLoss(), lambda z, dim: torch.sigmoid(z)

    def train():
        optimizer.zero_grad(set_to_none=True)
        criterion(model(tx), ty).backward()
        optimizer.step()

    def predict():
        with torch.no_grad():
            return head(model(tx), dim=1).numpy()

    return train, predict


def measure(repeats, cases=CASES):
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
    for label, layers, activations, loss, optimizer, batches in cases:
        for batch in batches:
            network = Network(layers, activations, loss, optimizer=optimizer,
                              learning_rate=LEARNING_RATE, dtype="float32")
            x = rng.standard_normal((batch, layers[0]), dtype=np.float32)
            if loss == "cross_entropy":
                y = rng.integers(0, layers[-1], batch)
                one_hot = np.eye(layers[-1], dtype=np.float32)[y]
            else:
                y = rng.integers(0, 2, batch)
                one_hot = y.astype(np.float32).reshape(-1, 1)
            row = {"case": label, "layers": layers, "batch": batch, "optimizer": optimizer,
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


def _format_table(rows, sgemm):
    header = ("case", "batch", "train us", "torch us", "numpy us", "x torch",
              "predict us", "torch us", "numpy us", "x torch", "GFLOP/s", "of sgemm")
    lines = ["  ".join(f"{h:>10}" for h in header)]
    for row in rows:
        def fmt(key, spec="10.1f"):
            return format(row[key], spec) if key in row else f"{'-':>10}"
        lines.append("  ".join([
            f"{row['case']:>10}", f"{row['batch']:>10}", fmt("nnserve_train_us"), fmt("torch_train_us"),
            fmt("numpy_train_us"), fmt("train_speedup_vs_torch", "10.2f"), fmt("nnserve_predict_us"),
            fmt("torch_predict_us"), fmt("numpy_predict_us"), fmt("predict_speedup_vs_torch", "10.2f"),
            fmt("train_gflops"), f"{row['train_gflops'] / sgemm:>10.0%}"]))
    return "\n".join(lines)


def run(args):
    blas = blas_report()
    cold, cached = compile_seconds()
    from nnserve.model import warmup

    warmup()
    rows, threads, torch_version = measure(args.repeats)
    # After the cases: right after a multi-threaded 1024^3 sgemm, the first case's batch-1
    # calls ran ~50% slower (measured), whatever that case was.
    sgemm = sgemm_gflops(args.repeats)
    print(f"BLAS: {json.dumps(blas['blas'])}")
    print(f"OPENBLAS_CORETYPE={blas['OPENBLAS_CORETYPE']} OPENBLAS_L2_SIZE={blas['OPENBLAS_L2_SIZE']}; "
          f"threads={threads}; torch={torch_version or 'not installed (torch columns skipped)'}")
    print(f"numba compile: cold {cold:.2f} s, from cache {cached:.2f} s; sgemm {sgemm:.1f} GFLOP/s")
    print(f"medians of {args.repeats} calls, float32, lr={LEARNING_RATE} (SGD unless the case says adam)")
    print(_format_table(rows, sgemm))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"blas": blas, "threads": threads, "torch": torch_version,
                       "compile_seconds": {"cold": cold, "cached": cached},
                       "sgemm_gflops": sgemm, "repeats": args.repeats, "rows": rows}, handle, indent=2)
    return 0
