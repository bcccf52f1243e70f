"""Server reflection of every service on the gRPC port: nnserve.v1, the Open Inference
Protocol, health and reflection itself.

grpc_reflection answers from one descriptor pool, but nnserve.oip's files are in a pool of
their own (proto/generate.py says why) and the others in protobuf's default pool; so
reflection answers from a pool holding copies of both, built once at import.
"""

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from nnserve.oip import grpc_service_pb2 as oip
from nnserve.v1 import nnserve_pb2 as pb

from .model_service import SERVICE_NAME
from .open_inference import OIP_SERVICE_NAME

__all__ = ["enable_reflection"]

# Each service on the port, and the generated module of the file that defines it.
_SERVICES = ((SERVICE_NAME, pb), (OIP_SERVICE_NAME, oip), (health.SERVICE_NAME, health_pb2),
             (reflection.SERVICE_NAME, reflection_pb2))


def _pool_of(files):
    """A new pool holding copies of `files` (FileDescriptors) and all they import."""
    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(file):
        if file.name in added:
            return
        for dependency in file.dependencies:  # a file can only be added after its imports
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.AddSerializedFile(proto.SerializeToString())
        added.add(file.name)

    for file in files:
        add(file)
    return pool


_SERVED_FILES = _pool_of(module.DESCRIPTOR for _, module in _SERVICES)


def enable_reflection(server):
    """Add the reflection service, describing every service on the port, to `server`."""
    reflection.enable_server_reflection([name for name, _ in _SERVICES], server, pool=_SERVED_FILES)
