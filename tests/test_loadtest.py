"""`nnserve loadtest` against a real server: counts, cleanup, exit status, loopback guard."""

import json

import pytest

from nnserve.cli.main import main
from nnserve.clients.loadtest import LoadTestError, check_target, parse_duration, parse_mix

from metrics_support import rpc, scrape, value
from service_support import pb, running_server

SMALL = "16,8,3"  # small models keep the short runs about the client and the server, not the math
STREAMED_UNARY = {"PredictStream": "Predict", "TrainStream": "TrainStep"}


def _loadtest(target, *flags):
    return main(["loadtest", "--target", target, "--layers", SMALL, *flags])


def test_mixed_load_reports_every_rpc_and_matches_the_servers_counters(tmp_path, capsys):
    """A 1.5 s predict/train/create mix exits 0, reports each RPC with OK counts that equal
    the server's own handled counters (less one warm-up call each), and deletes its models."""
    report_path = tmp_path / "report.json"
    with running_server() as live:
        status = _loadtest(live.target, "--duration", "1.5s", "--concurrency", "4",
                           "--mix", "predict=10,train=3,create=1", "--models", "2",
                           "--json", str(report_path))
        samples = scrape(live.server.metrics_port)
        assert len(live.server.registry) == 0
    assert status == 0
    report = json.loads(report_path.read_text())
    assert report["ok"] and report["unexpected_codes"] == []
    rows = report["rpcs"]
    assert set(rows) == {"Predict", "TrainStep", "CreateModel", "DeleteModel"}
    for name, row in rows.items():
        assert row["codes"] == {"OK": row["calls"]} and row["calls"] > 0, name
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"], name
        assert row["requests_per_second"] == pytest.approx(row["calls"] / report["elapsed_seconds"])
    assert report["total"]["calls"] == sum(row["calls"] for row in rows.values())
    handled = {name: value(samples, "grpc_server_handled_total", **rpc(name, "OK")) for name in rows}
    assert handled["Predict"] == rows["Predict"]["calls"] + 1
    assert handled["TrainStep"] == rows["TrainStep"]["calls"] + 1
    assert handled["CreateModel"] == rows["CreateModel"]["calls"] + 1 + 2  # + the 2 models
    assert handled["DeleteModel"] == rows["DeleteModel"]["calls"] + 1 + 2
    assert rows["TrainStep"]["rows_per_second"] == pytest.approx(
        rows["TrainStep"]["requests_per_second"])  # batch 1
    table = capsys.readouterr().out
    assert "p99 ms" in table and "Predict" in table and "OK=" in table


def test_fit_runs_whole_jobs_on_models_of_their_own(tmp_path, capsys):
    """A predict/train/fit mix exits 0 with every Fit a job that SUCCEEDED, as many as the
    server's CreateTrainingJob and WatchTrainingJob counters (less one warm-up), no
    FAILED_PRECONDITION on any RPC, and no model or dataset left behind."""
    report_path = tmp_path / "report.json"
    with running_server() as live:
        status = _loadtest(live.target, "--duration", "1.5s", "--concurrency", "4",
                           "--mix", "predict=4,train=4,fit=2", "--fit-batch", "16",
                           "--json", str(report_path))
        samples = scrape(live.server.metrics_port)
        assert len(live.server.registry) == 0
        assert not live.stub.ListDatasets(pb.ListDatasetsRequest(), timeout=30).datasets
        jobs, token = [], None
        while token != "":
            page = live.stub.ListTrainingJobs(pb.ListTrainingJobsRequest(
                page_size=1000, page_token=token or ""), timeout=30)
            jobs, token = jobs + list(page.jobs), page.next_page_token
    assert status == 0
    report = json.loads(report_path.read_text())
    assert report["ok"] and report["settings"]["fit_batch"] == 16
    rows = report["rpcs"]
    assert set(rows) == {"Predict", "TrainStep", "Fit"}
    fits = rows["Fit"]["calls"]
    assert fits > 0 and rows["Fit"]["codes"] == {"OK": fits}
    for name, row in rows.items():
        assert row["codes"] == {"OK": row["calls"]}, name
    assert rows["Fit"]["rows_per_second"] == pytest.approx(fits * 256 / report["elapsed_seconds"])
    for method in ("CreateTrainingJob", "WatchTrainingJob"):
        grpc_type = "SERVER_STREAM" if method == "WatchTrainingJob" else "UNARY"
        assert value(samples, "grpc_server_handled_total",
                     **rpc(method, "OK", grpc_type=grpc_type)) == fits + 1, method
    refused = [key for key, count in samples.items()
               if count and key[0] == "grpc_server_handled_total" and ("grpc_code", "OK") not in key[1]]
    assert refused == []  # in particular no FAILED_PRECONDITION from a job meeting a TrainStep
    assert len(jobs) == fits + 1
    assert {job.state for job in jobs} == {pb.TRAINING_JOB_STATE_SUCCEEDED}
    assert {(job.epochs, job.batch_size, job.total_steps) for job in jobs} == {(1, 16, 16)}
    assert len({job.model for job in jobs}) <= 4  # the pool: one model per worker
    table = capsys.readouterr().out
    assert "Fit" in table and "rows/s trained by jobs that succeeded" in table


def test_stream_sends_predict_and_train_as_messages_over_one_stream_per_worker(tmp_path, capsys):
    """With --stream, a 1 s predict/train/create mix exits 0 and reports PredictStream and
    TrainStream rows counting messages, all OK, that equal the server's received-message
    counters (less the one warm-up message each) over one stream per worker and kind (plus
    the warm-up's), every stream ended OK; create stays calls, and the models are deleted."""
    report_path = tmp_path / "report.json"
    with running_server() as live:
        status = _loadtest(live.target, "--duration", "1s", "--concurrency", "3", "--stream",
                           "--window", "4", "--mix", "predict=3,train=1,create=1",
                           "--json", str(report_path))
        samples = scrape(live.server.metrics_port)
        assert len(live.server.registry) == 0
    assert status == 0
    report = json.loads(report_path.read_text())
    assert report["ok"] and report["settings"]["stream"] and report["settings"]["window"] == 4
    rows = report["rpcs"]
    assert set(rows) == {"PredictStream", "TrainStream", "CreateModel", "DeleteModel"}
    for method in ("PredictStream", "TrainStream"):
        row = rows[method]
        assert "calls" not in row and row["messages"] > 0 and row["codes"] == {"OK": row["messages"]}
        assert row["messages_per_second"] == pytest.approx(row["messages"] / report["elapsed_seconds"])
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
        labels = rpc(method, grpc_type="BIDI_STREAM")
        assert value(samples, "grpc_server_msg_received_total", **labels) == row["messages"] + 1
        assert value(samples, "grpc_server_msg_sent_total", **labels) == row["messages"] + 1
        assert value(samples, "grpc_server_started_total", **labels) == 3 + 1
        assert value(samples, "grpc_server_handled_total",
                     **rpc(method, "OK", grpc_type="BIDI_STREAM")) == 3 + 1
        assert value(samples, "grpc_server_started_total", **rpc(STREAMED_UNARY[method])) == 0
    assert report["total"]["calls"] == sum(row.get("calls", row.get("messages")) for row in rows.values())
    table = capsys.readouterr().out
    assert "PredictStream" in table and "messages, not calls, over 3 stream(s) each (window 4)" in table


def test_an_unexpected_status_code_exits_1_unless_expected(capsys):
    """Predicts refused with RESOURCE_EXHAUSTED (batch over the server's row limit) exit 1,
    and 0 with --expect RESOURCE_EXHAUSTED."""
    with running_server(max_rows_per_request=1) as live:
        flags = ("--duration", "0.3s", "--concurrency", "2", "--mix", "predict=1", "--batch", "2")
        assert _loadtest(live.target, *flags) == 1
        assert "unexpected status codes: RESOURCE_EXHAUSTED" in capsys.readouterr().out
        assert _loadtest(live.target, *flags, "--expect", "resource_exhausted") == 0


def test_targets_off_loopback_are_refused_unless_allowed(capsys):
    """A non-loopback target exits 2 before connecting; loopback forms and --allow-remote pass."""
    assert _loadtest("192.0.2.1:50051", "--duration", "1s") == 2
    assert "--allow-remote" in capsys.readouterr().err
    for target in ("127.0.0.1:1", "localhost:1", "[::1]:1", "ipv4:127.0.0.2:1", "unix:/tmp/s"):
        check_target(target)
    check_target("192.0.2.1:50051", allow_remote=True)
    with pytest.raises(LoadTestError, match="loopback"):
        check_target("dns:///192.0.2.1:50051")


def test_bad_arguments_exit_2_with_got_expected_messages(capsys):
    """Unknown operations, bad weights, a window below 1 and bad durations exit 2 saying what
    was expected."""
    assert _loadtest("127.0.0.1:1", "--mix", "predict=1,fly=2") == 2
    assert "expected one of predict, train, evaluate, create, fit" in capsys.readouterr().err
    assert _loadtest("127.0.0.1:1", "--stream", "--window", "0") == 2
    assert "window: got 0, expected >= 1" in capsys.readouterr().err
    assert parse_mix("predict=3,train=0") == {"predict": 3, "train": 0}
    assert parse_duration("250ms") == 0.25 and parse_duration("2m") == 120 and parse_duration("3") == 3
    for text in ("predict=0", "predict=-1", "predict=x"):
        with pytest.raises(ValueError, match="mix"):
            parse_mix(text)
    for text in ("0s", "soon", "-1s"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(text)


def test_one_output_models_train_as_binary_classifiers(tmp_path):
    """--layers ending in 1: a sigmoid output with binary cross-entropy and 0/1 labels (a
    softmax over one output is refused by the server), unary and over streams."""
    report_path = tmp_path / "report.json"
    with running_server() as live:
        status = main(["loadtest", "--target", live.target, "--layers", "2,8,8,1", "--duration",
                       "0.5s", "--concurrency", "2", "--mix", "predict=1,train=1,fit=1",
                       "--fit-batch", "4", "--json", str(report_path)])
        streamed = main(["loadtest", "--target", live.target, "--layers", "2,8,8,1", "--duration",
                         "0.5s", "--concurrency", "1", "--mix", "train=1", "--batch", "4", "--stream"])
    assert status == 0 and streamed == 0
    report = json.loads(report_path.read_text())
    assert report["ok"] and report["rpcs"]["TrainStep"]["calls"] > 0
