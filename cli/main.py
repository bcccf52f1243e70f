"""`nnserve`: one entry point, subcommands imported only when used.

Importing lazily keeps `nnserve --help` fast and lets a client-only install (no numba)
run the client-side subcommands.
"""

import argparse
import sys


def _bench_kernels(args):
    from nnserve.bench.kernels import run

    return run(args)


def _bench_cluster(args):
    from nnserve.bench.cluster import run

    return run(args)


def _bench_service(args):
    from nnserve.bench.service import run

    return run(args)


def _bench_playground(args):
    from nnserve.bench.playground import run

    return run(args)


def _loadtest(args):
    from nnserve.clients.loadtest import loadtest_command

    return loadtest_command(args)


def _serve(args):
    from nnserve.service.process import serve_command

    return serve_command(args)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected an integer >= 1")
    return value


def _add_loadtest_arguments(parser):
    # Here rather than in nnserve.clients.loadtest, whose imports (grpc, the SDK) would slow
    # down every `nnserve` command.
    parser.add_argument("--target", required=True, metavar="HOST:PORT", help="the server")
    parser.add_argument("--duration", default="10s", help="measured time (default 10s)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="workers, each with one call in flight (default 16); with "
                             "--stream, also the streams of each kind")
    parser.add_argument("--mix", default="predict=10,train=3,create=1",
                        help="operation weights, from predict, train, evaluate, create, fit "
                             "(one training job run to its end on a model of its own) "
                             "(default predict=10,train=3,create=1)")
    parser.add_argument("--batch", type=int, default=1,
                        help="rows per Predict/TrainStep/Evaluate (default 1)")
    parser.add_argument("--fit-batch", type=int, default=32,
                        help="rows per train step of a fit's job, which trains one epoch on "
                             "256 uploaded rows (default 32)")
    parser.add_argument("--layers", default="784,256,256,10",
                        help="the models' layer widths: relu layers, softmax output (one "
                             "output: sigmoid, binary cross-entropy) (default 784,256,256,10)")
    parser.add_argument("--models", type=int, default=1,
                        help="models created for predict/train/evaluate (default 1); a mix "
                             "with fit also creates one per worker for the jobs")
    parser.add_argument("--warmup", default="0s",
                        help="unreported load before the measured time (default 0s; one call "
                             "of each operation is always made first)")
    parser.add_argument("--timeout", default="30s",
                        help="deadline of each call (default 30s); a stream's is --duration "
                             "plus this")
    parser.add_argument("--expect", default="", metavar="CODE,...",
                        help="status codes that are no failure besides OK (e.g. RESOURCE_EXHAUSTED)")
    parser.add_argument("--stream", action="store_true",
                        help="send predict and train as messages over streams (PredictStream, "
                             "TrainStream: one of each kind per worker, open for the whole run) "
                             "with up to --window unanswered per stream, instead of one call "
                             "each; reported as messages/s and per-message latency")
    parser.add_argument("--window", type=int, default=16,
                        help="with --stream, messages sent and unanswered at once per stream "
                             "(default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the choices")
    parser.add_argument("--token", default=None, help="bearer token sent with every call")
    parser.add_argument("--tls-ca", default=None, metavar="PEM",
                        help="use TLS, trusting these CA certificates (default: plaintext)")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a target that is not loopback")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nnserve", description="Train and serve feed-forward neural networks over gRPC.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = commands.add_parser("bench", help="measure nnserve against references")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    kernels = benches.add_parser(
        "kernels", help="train-step and predict timings: nnserve vs PyTorch vs numpy")
    kernels.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    kernels.add_argument("--repeats", type=int, default=200,
                         help="timed calls per case (median reported; default 200)")
    kernels.add_argument(
        "--openblas-coretype", choices=("env", "both"), default="env",
        help="env: one run in this process, OpenBLAS as the environment sets it (default); "
             "both: two runs in child processes, the environment's OPENBLAS_CORETYPE and the "
             "other setting (unset if the environment sets it, else Haswell, the AVX2 kernel), "
             "each table headed by the BLAS kernel that ran")
    kernels.set_defaults(handler=_bench_kernels)
    service = benches.add_parser(
        "service", help="requests/s, latency and memory over gRPC: nnserve vs a bare gRPC "
                        "server (the floor) vs PyTorch behind grpcio")
    service.add_argument("--duration", default="5s",
                         help="measured time per case and server (default 5s)")
    service.add_argument("--rounds", type=_positive_int, default=5,
                         help="turns the servers take per case, the duration split among them; "
                              "figures are the medians (default 5)")
    service.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    service.set_defaults(handler=_bench_service)
    cluster = benches.add_parser(
        "cluster", help="cluster mode: routed (nginx) vs direct Predict and TrainStep, and the "
                        "time to recover a killed server's models vs their number and size",
        description="Starts etcd, two `nnserve serve --cluster-etcd` servers and nginx (from "
                    "deploy/nginx/nnserve.conf.template) on this machine; needs the etcd and "
                    "nginx binaries and a source checkout.")
    cluster.add_argument("--duration", default="10s",
                         help="measured time per proxy case, both paths together (default 10s)")
    cluster.add_argument("--rounds", type=_positive_int, default=5,
                         help="rounds per proxy case, the paths' order alternating; figures "
                              "are the medians (default 5)")
    cluster.add_argument("--models", default="1,10,30",
                         help="comma-separated model counts of the recovery (default 1,10,30)")
    cluster.add_argument("--recovery-layers", default="16,32,4;784,256,256,10",
                         help="semicolon-separated layer widths of the recovery's model sizes "
                              "(default 16,32,4;784,256,256,10)")
    cluster.add_argument("--lease-ttl", type=int, default=3,
                         help="the servers' --cluster-lease-ttl, included in the recovery "
                              "times (default 3)")
    cluster.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    cluster.set_defaults(handler=_bench_cluster)
    playground = benches.add_parser(
        "playground", help="the playground's heat-map frames/s and training speed with a "
                           "viewer attached vs none")
    playground.add_argument("--seconds", type=float, default=3.0,
                            help="measured time per turn (default 3)")
    playground.add_argument("--rounds", type=_positive_int, default=3,
                            help="turns alone and watched; figures are medians (default 3)")
    playground.add_argument("--viewer", choices=("chromium", "process"), default="chromium",
                            help="who watches: the page in Debian's Chromium (default; needs "
                            "playwright) or a Python process reading the events stream")
    playground.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    playground.set_defaults(handler=_bench_playground)

    loadtest = commands.add_parser(
        "loadtest", help="load a server with a mix of train and predict calls",
        description="Create models on the server (and, for fit, a dataset), keep "
                    "--concurrency calls in flight for --duration with the --mix of "
                    "operations, delete the models and the dataset, and report requests/s, "
                    "latency quantiles and status codes per RPC (fit: per training job, as "
                    "Fit; with --stream, predict and train messages per stream method). Exit "
                    "status 1 when a status code other than OK (and --expect) appeared.")
    _add_loadtest_arguments(loadtest)
    loadtest.set_defaults(handler=_loadtest)

    from nnserve.service.settings import add_arguments

    serve = commands.add_parser(
        "serve", help="run the gRPC server (port 50051 unless told otherwise)",
        description="Train and serve models over gRPC until SIGTERM or SIGINT, then shut down "
                    "gracefully and exit 0. Each option also reads an NNSERVE_* environment "
                    "variable; a flag beats the variable, which beats the default.")
    add_arguments(serve)
    serve.set_defaults(handler=_serve)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.handler(args) or 0


if __name__ == "__main__":
    sys.exit(main())
