"""`nnserve`: one entry point, subcommands imported only when used.

Importing lazily keeps `nnserve --help` fast and lets a client-only install (no numba)
run the client-side subcommands.
"""

import argparse
import sys


def _bench_kernels(args):
    from nnserve.bench.kernels import run

    return run(args)


def _serve(args):
    from nnserve.service.serve import serve_command

    return serve_command(args)


def build_parser():
    parser = argparse.ArgumentParser(prog="nnserve", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = commands.add_parser("bench", help="measure nnserve against references")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    kernels = benches.add_parser(
        "kernels", help="train-step and predict timings: nnserve vs PyTorch vs numpy")
    kernels.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    kernels.add_argument("--repeats", type=int, default=200,
                         help="timed calls per case (median reported; default 200)")
    kernels.set_defaults(handler=_bench_kernels)

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
