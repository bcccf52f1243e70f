"""`nnserve bench kernels`' measuring and report, on small cases (no timings are asserted)."""

from nnserve.bench import kernels

SMALL = [("tiny-sgd", [3, 5, 2], ["tanh", "softmax"], "cross_entropy", "sgd", [1, 4]),
         ("tiny-adam", [3, 5, 1], ["relu", "sigmoid"], "binary_cross_entropy", "adam", [4])]


def test_rows_hold_every_reference_the_case_has():
    rows, threads, torch_version = kernels.measure(3, cases=SMALL)
    assert [(row["case"], row["batch"]) for row in rows] == [("tiny-sgd", 1), ("tiny-sgd", 4),
                                                             ("tiny-adam", 4)]
    assert threads >= 1
    for row in rows:
        assert row["nnserve_train_us"] > 0 and row["nnserve_predict_us"] > 0
        # numpy's reference MLP is plain SGD: no numpy figures for Adam.
        assert ("numpy_train_us" in row) == (row["optimizer"] == "sgd")
        has_torch = torch_version is not None  # torch importable: its columns, else none
        assert ("torch_train_us" in row) == has_torch
        if has_torch:
            assert row["train_speedup_vs_torch"] == row["torch_train_us"] / row["nnserve_train_us"]
    table = kernels._format_table(rows, sgemm=100.0).splitlines()
    assert len(table) == 1 + len(rows) and "tiny-adam" in table[-1]
    assert table[-1].split()[4] == "-"  # the numpy column of the Adam row
