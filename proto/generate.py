"""Generate the Python code of the contract: `python proto/generate.py [--out DIR]`.

Writes X_pb2.py, X_pb2.pyi and X_pb2_grpc.py next to each X.proto: nnserve.v1 (the
contract) and nnserve.oip (the Open Inference Protocol); with --out, under DIR instead
(the staleness test uses it). The generated files
are committed and never edited by hand; grpcio-tools is pinned in pyproject.toml because
its output must match the committed files byte for byte.
"""

import argparse
import sys
from importlib import resources
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PROTO_FILES = ("nnserve/v1/nnserve.proto", "nnserve/oip/model_config.proto",
               "nnserve/oip/grpc_service.proto")


def generate(out_root):
    """Run protoc on PROTO_FILES, writing under out_root; raise on failure."""
    from grpc_tools import protoc

    out_root = Path(out_root)
    for proto in PROTO_FILES:
        (out_root / proto).parent.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *PROTO_FILES,
    ]
    status = protoc.main(args)
    if status != 0:
        raise RuntimeError(f"protoc: got exit status {status}, expected 0 (see the messages above)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(PROTO_ROOT),
                        help="root to write nnserve/*/*_pb2*.py under (default: proto/)")
    args = parser.parse_args(argv)
    generate(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
