"""The Open Inference Protocol cases of `nnserve bench service`: v2 ModelInfer over gRPC (and
REST infer over HTTP, binary as tritonclient.http sends it and JSON, when the server has
its HTTP port) beside nnserve.v1 Predict, on one
`nnserve serve` process and one [784, 256, 256, 10] float32 model.

Each case's requests are built once; a grpc.aio (or aiohttp) client keeps `in_flight`
calls going for a turn, the protocols taking turns `rounds` x TURNS_PER_ROUND times with a
quiet pause between turns; a protocol's rate is the median over its turns and the ratio
to v1 the median of the turns' ratios.
"""

import asyncio
import json
import statistics
import time

import numpy as np

__all__ = ["OIP_CASES", "format_open_inference", "measure_open_inference", "open_inference_targets"]

LAYERS = (784, 256, 256, 10)
# (name, rows per request, calls in flight)
OIP_CASES = (("b1 x1", 1, 1), ("b256 x4", 256, 4))
TURNS_PER_ROUND = 2
TURN_SECONDS = 1.0
QUIET_SECONDS = 0.5
V2_TARGET = 0.9  # v2 gRPC req/s at least this fraction of v1's


async def _turn(call, in_flight, seconds):
    """Calls per second of `call()` kept `in_flight` at once for `seconds`."""
    count = 0
    deadline = time.perf_counter() + seconds

    async def worker():
        nonlocal count
        while time.perf_counter() < deadline:
            await call()
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return count / (time.perf_counter() - started)


def _requests(model, rows):
    from nnserve.oip import grpc_service_pb2 as oip
    from nnserve.v1 import nnserve_pb2 as pb
    from nnserve.v1.tensors import to_tensor

    x = np.random.default_rng(0).normal(size=(rows, LAYERS[0])).astype(np.float32)
    v1 = pb.PredictRequest(model=model, x=to_tensor(x))
    v2 = oip.ModelInferRequest(
        model_name=model,
        inputs=[oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=x.shape)],
        raw_input_contents=[x.tobytes()])
    json_body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                             "data": x.ravel().tolist()}]}
    # The binary tensor extension, as tritonclient.http sends by default: a JSON header,
    # then the raw bytes; the output asked back in binary too.
    header = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
    binary_body = (header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header)),
                                          "Content-Type": "application/octet-stream"})
    return v1, v2, json_body, binary_body


async def _measure(port, http_port, rounds):
    import grpc

    from nnserve.oip import grpc_service_pb2_grpc as oip_grpc
    from nnserve.v1 import nnserve_pb2 as pb
    from nnserve.v1 import nnserve_pb2_grpc as pb_grpc
    from nnserve.v1.models import spec_to_proto

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]) as channel:
        v1_stub, v2_stub = pb_grpc.ModelServiceStub(channel), oip_grpc.GRPCInferenceServiceStub(channel)
        spec = dict(layers=list(LAYERS), activations=["relu", "relu", "softmax"], loss="cross_entropy",
                    optimizer="sgd", learning_rate=0.01, init="he", dtype="float32", seed=0)
        model = (await v1_stub.CreateModel(pb.CreateModelRequest(spec=spec_to_proto(spec)))).model.id
        session = None
        if http_port:
            import aiohttp

            session = aiohttp.ClientSession(f"http://127.0.0.1:{http_port}")
        try:
            results = {}
            for name, rows, in_flight in OIP_CASES:
                v1, v2, json_body, (binary_body, binary_headers) = _requests(model, rows)
                calls = {"v1 Predict": lambda v1=v1: v1_stub.Predict(v1),
                         "v2 ModelInfer": lambda v2=v2: v2_stub.ModelInfer(v2)}
                if session is not None:
                    async def post(**body):
                        async with session.post(f"/v2/models/{model}/infer", **body) as response:
                            response.raise_for_status()
                            await response.read()

                    calls["REST binary"] = lambda: post(data=binary_body, headers=binary_headers)
                    # At batch 256 a JSON body is a list of 200k numbers: what this measures
                    # there is mostly the JSON codecs, both ends on these two cores.
                    calls["REST JSON"] = lambda: post(json=json_body)
                for call in calls.values():  # warm: buffers, connections
                    await _turn(call, in_flight, 0.3)
                turns = {protocol: [] for protocol in calls}
                for _ in range(rounds * TURNS_PER_ROUND):
                    for protocol, call in calls.items():
                        await asyncio.sleep(QUIET_SECONDS)
                        turns[protocol].append(await _turn(call, in_flight, TURN_SECONDS))
                results[name] = {
                    "rows": rows, "in_flight": in_flight, "turns": turns,
                    "requests_per_second": {p: statistics.median(t) for p, t in turns.items()},
                    "vs_v1": {p: statistics.median(a / b for a, b in zip(t, turns["v1 Predict"]))
                              for p, t in turns.items() if p != "v1 Predict"}}
            return results
        finally:
            if session is not None:
                await session.close()


def measure_open_inference(port, http_port, rounds):
    """{case: figures} against the nnserve server on `port` (and its HTTP port, 0: none)."""
    return asyncio.run(_measure(port, http_port, rounds))


def open_inference_targets(results):
    """(what, value, bound, met) of the issue's target: v2 gRPC >= 0.9x v1 Predict."""
    return [(f"v2 ModelInfer {name}: req/s vs v1 Predict", row["vs_v1"]["v2 ModelInfer"],
             f">= {V2_TARGET}", row["vs_v1"]["v2 ModelInfer"] >= V2_TARGET)
            for name, row in results.items()]


def format_open_inference(results):
    lines = [f"{'open inference case':<20} {'protocol':<14} {'req/s':>9} {'x v1':>6}"]
    for name, row in results.items():
        for protocol, rate in row["requests_per_second"].items():
            ratio = row["vs_v1"].get(protocol)
            lines.append(f"{name:<20} {protocol:<14} {rate:>9.1f} "
                         + (f"{ratio:>6.2f}" if ratio is not None else f"{'':>6}"))
    return "\n".join(lines)
