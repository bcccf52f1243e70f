"""`nnserve bench kernels`' measuring and report, on small cases (no timings are asserted)."""

import argparse
import json
import os
import re

import pytest

from nnserve.bench import kernel_settings, kernels

SMALL = [("tiny-sgd", [3, 5, 2], ["tanh", "softmax"], "cross_entropy", "sgd", "float32", [1, 4]),
         ("tiny-f64", [3, 5, 2], ["relu", "softmax"], "cross_entropy", "sgd", "float64", [2]),
         ("tiny-adam", [3, 5, 1], ["relu", "sigmoid"], "binary_cross_entropy", "adam", "float32",
          [4])]
COLUMNS = ["case", "dtype", "batch", "train us", "torch us", "numpy us", "x torch", "predict us",
           "torch us", "numpy us", "x torch", "GFLOP/s", "of gemm"]


def _number(cell):
    """A table cell's number (a percentage as a fraction); None for '-'."""
    if cell == "-":
        return None
    return float(cell[:-1]) / 100 if cell.endswith("%") else float(cell)


def _reports(output):
    """Each printed report: its kernels' BLAS line and its table, as {column: cell} rows."""
    reports = []
    lines = output.splitlines()
    for at, line in enumerate(lines):
        if line.startswith("kernels' BLAS:"):
            reports.append({"blas": line, "rows": []})
        elif re.split(r"\s{2,}", line.strip()) == COLUMNS:
            for row in lines[at + 1:]:
                cells = row.split()
                if len(cells) != len(COLUMNS) or not cells[2].isdigit():  # past the table
                    break
                reports[-1]["rows"].append(dict(zip(["case", "dtype", "batch"], cells[:3]),
                                                figures=[_number(cell) for cell in cells[3:]]))
    return reports


def _check_rows(printed, rows):
    """The printed rows are the measured ones, each with real figures where it has a reference."""
    assert [(r["case"], r["dtype"], int(r["batch"])) for r in printed] == \
        [(row["case"], row["dtype"], row["batch"]) for row in rows]
    for line, row in zip(printed, rows):
        train, torch, numpy, _, predict, *_, gflops, of_gemm = line["figures"]
        assert train > 0 and predict > 0 and gflops >= 0 and of_gemm >= 0
        assert (torch is None) == ("torch_train_us" not in row)
        assert (numpy is None) == (row["optimizer"] != "sgd")  # numpy's MLP is plain SGD


def test_cases_hold_float64_beside_float32_for_the_mnist_sized_network():
    mnist = {dtype: batches for label, layers, activations, loss, optimizer, dtype, batches in
             kernels.CASES if label == "mnist-mlp"}
    assert mnist == {"float32": [1, 32, 256, 1024], "float64": [1, 32, 256, 1024]}


def test_rows_hold_every_reference_the_case_has():
    rows, threads, torch_version = kernels.measure(3, SMALL)
    assert [(row["case"], row["dtype"], row["batch"]) for row in rows] == [
        ("tiny-sgd", "float32", 1), ("tiny-sgd", "float32", 4), ("tiny-f64", "float64", 2),
        ("tiny-adam", "float32", 4)]
    assert threads >= 1
    for row in rows:
        assert row["nnserve_train_us"] > 0 and row["nnserve_predict_us"] > 0
        # numpy's reference MLP is plain SGD: no numpy figures for Adam.
        assert ("numpy_train_us" in row) == (row["optimizer"] == "sgd")
        has_torch = torch_version is not None  # torch importable: its columns, else none
        assert ("torch_train_us" in row) == has_torch
        if has_torch:
            assert row["train_speedup_vs_torch"] == row["torch_train_us"] / row["nnserve_train_us"]
    # Each row's "of gemm" is over its own dtype's gemm: give dgemm half sgemm's speed.
    printed = _reports("kernels' BLAS: -\n" + kernels._format_table(
        rows, {"float32": 100.0, "float64": 50.0}))[0]["rows"]
    _check_rows(printed, rows)
    for line, row in zip(printed, rows):
        gemm = 50.0 if row["dtype"] == "float64" else 100.0
        assert line["figures"][-1] == pytest.approx(round(row["train_gflops"] / gemm * 100) / 100)


def test_settings_change_openblas_coretype_alone():
    unset = kernel_settings.settings({"PATH": "/bin"})
    assert unset == [("environment", {"PATH": "/bin"}),
                     ("other", {"PATH": "/bin", "OPENBLAS_CORETYPE": "Haswell"})]
    ci = {"PATH": "/bin", "OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1024"}
    assert kernel_settings.settings(ci) == [
        ("environment", ci), ("other", {"PATH": "/bin", "OPENBLAS_L2_SIZE": "1024"})]


def _run(tmp_path, monkeypatch, mode):
    # SMALL cases, and no cold numba compile (40 s) for the compile line.
    monkeypatch.setattr(kernels, "CASES", SMALL)
    monkeypatch.setattr(kernels, "compile_seconds", lambda: [2.0, 1.0])
    path = tmp_path / "kernels.json"
    assert kernels.run(argparse.Namespace(repeats=2, json=str(path), openblas_coretype=mode)) == 0
    return json.loads(path.read_text())


def _check_run(report, run):
    _check_rows(report["rows"], run["rows"])
    assert run["sgemm_gflops"] > 0 and run["dgemm_gflops"] > 0
    kernels_blas = [pool for pool in run["blas"]["blas"] if pool["used_by_kernels"]]
    if kernels_blas:  # threadpoolctl installed: the kernel that ran is named
        assert f"architecture {kernels_blas[0]['architecture']}," in report["blas"]
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        assert f"{name}={run['blas'][name] or 'unset'}" in report["blas"]


def test_one_run_in_process_by_default(tmp_path, monkeypatch, capsys):
    figures = _run(tmp_path, monkeypatch, "env")
    [report] = _reports(capsys.readouterr().out)
    _check_run(report, figures)
    assert figures["compile_seconds"] == {"cold": 2.0, "cached": 1.0}
    assert figures["blas"]["OPENBLAS_CORETYPE"] == os.environ.get("OPENBLAS_CORETYPE")


def test_both_settings_run_in_child_processes(tmp_path, monkeypatch, capfd):
    figures = _run(tmp_path, monkeypatch, "both")
    reports = _reports(capfd.readouterr().out)  # the children write to the same stdout
    assert len(reports) == 2 == len(figures["runs"])
    assert figures["compile_seconds"] == {"cold": 2.0, "cached": 1.0}
    for report, run in zip(reports, figures["runs"]):
        _check_run(report, run)
    environment, other = figures["runs"]
    assert (environment["setting"], other["setting"]) == ("environment", "other")
    assert environment["blas"]["OPENBLAS_CORETYPE"] == os.environ.get("OPENBLAS_CORETYPE")
    assert other["blas"]["OPENBLAS_L2_SIZE"] == os.environ.get("OPENBLAS_L2_SIZE")
    if "OPENBLAS_CORETYPE" in os.environ:
        assert other["blas"]["OPENBLAS_CORETYPE"] is None
    else:
        assert other["blas"]["OPENBLAS_CORETYPE"] == "Haswell"
        # OpenBLAS honoured it: the kernels' BLAS ran its Haswell (AVX2) kernel.
        assert [pool["architecture"] for pool in other["blas"]["blas"]
                if pool["used_by_kernels"]] in ([], ["Haswell"])
