"""Generate the Python code of the contract: `python proto/generate.py [--out DIR]`.

Writes X_pb2.py, X_pb2.pyi and X_pb2_grpc.py next to each X.proto: nnserve.v1 (the
contract) and nnserve.oip (the Open Inference Protocol); with --out, under DIR instead
(the staleness test uses it). The generated files
are committed and never edited by hand; grpcio-tools is pinned in pyproject.toml because
its output must match the committed files byte for byte. protoc's output is changed in
one way (`_use_private_pool`), here, so that the committed files stay exactly this script's
output.
"""

import argparse
import sys
from importlib import resources
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PROTO_FILES = ("nnserve/v1/nnserve.proto", "nnserve/oip/model_config.proto",
               "nnserve/oip/grpc_service.proto")
# nnserve.oip's messages bear Triton's names (inference.*), and tritonclient.grpc registers
# Triton's own in protobuf's default descriptor pool under other file names: two files
# defining one name cannot share a pool, so whichever came second failed to import
# ("duplicate symbol"). These modules add their files to nnserve.oip.pool.POOL instead,
# so tritonclient and nnserve's server live in one process.
PRIVATE_POOL_MODULES = ("nnserve/oip/model_config_pb2.py", "nnserve/oip/grpc_service_pb2.py")
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = "DESCRIPTOR = _oip_pool.POOL.AddSerializedFile("
# protoc's insertion point for imports: where plugins add theirs.
_IMPORTS_POINT = "# @@protoc_insertion_point(imports)\n"
_POOL_IMPORT = "from nnserve.oip import pool as _oip_pool\n"


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
    for module in PRIVATE_POOL_MODULES:
        _use_private_pool(out_root / module)


def _use_private_pool(path):
    """Rewrite the generated module at path to add its file to nnserve.oip.pool.POOL
    rather than to the default pool (PRIVATE_POOL_MODULES says why)."""
    code = path.read_text(encoding="utf-8")
    for line in (_DEFAULT_POOL, _IMPORTS_POINT):
        if code.count(line) != 1:
            raise RuntimeError(f"{path}: got {code.count(line)} lines {line.strip()!r}, expected 1 "
                               "(has protoc's output changed?)")
    code = code.replace(_IMPORTS_POINT, _IMPORTS_POINT + _POOL_IMPORT).replace(_DEFAULT_POOL, _PRIVATE_POOL)
    path.write_text(code, encoding="utf-8")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(PROTO_ROOT),
                        help="root to write nnserve/*/*_pb2*.py under (default: proto/)")
    args = parser.parse_args(argv)
    generate(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
