"""The descriptor pool nnserve.oip's messages are defined in, apart from protobuf's
default pool, where tritonclient.grpc defines Triton's messages of the same names
(proto/generate.py rewrites the generated modules to use it, and says why).

This keeps the names apart under protobuf's default backend (upb). The pure-Python backend
(PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python) also enters each message class's descriptor
in the default pool, where the names clash again.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
