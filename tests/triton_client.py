"""tritonclient's side of tests/test_open_inference.py, run as its own process.

    python tests/triton_client.py grpc|http TARGET MODEL IN.npz OUT.npz

tritonclient.grpc registers Triton's inference.* protobuf messages in the process's
descriptor pool, where nnserve's server registers its own (nnserve.oip: the same message
names, a subset of the fields), so the two cannot share a process. This script uses only
tritonclient and numpy: it calls every method the tests check, on the inputs of IN.npz
(x32, x64, max_rows and, optionally, float32_model: a model FP64 inputs must be refused
by), and writes the outputs to OUT.npz and everything
else (metadata, config, readiness, the errors met) as JSON on stdout.
"""

import json
import queue
import sys

import numpy as np


def _error(call):
    """(status, message) of the exception a call raises, or None if it returns."""
    from tritonclient.utils import InferenceServerException

    try:
        call()
    except InferenceServerException as error:
        return [str(error.status()), error.message()]
    return None


def _as_dict(message):
    from google.protobuf.json_format import MessageToDict

    return message if isinstance(message, dict) else MessageToDict(message, preserving_proto_field_name=True)


def main(binding, target, model, inputs_path, outputs_path):
    if binding == "grpc":
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module
    data = np.load(inputs_path)
    client = client_module.InferenceServerClient(target)
    report = {"live": client.is_server_live(), "ready": client.is_server_ready(),
              "model_ready": client.is_model_ready(model),
              "metadata": _as_dict(client.get_server_metadata()),
              "model_metadata": _as_dict(client.get_model_metadata(model)),
              "model_config": _as_dict(client.get_model_config(model)),
              "index": _as_dict(client.get_model_repository_index())}
    outputs = {}

    def request(x, datatype, names=("output", "class"), **kwargs):
        tensor = client_module.InferInput("input", list(x.shape), datatype)
        tensor.set_data_from_numpy(x, **kwargs)
        return {"inputs": [tensor], "outputs": [client_module.InferRequestedOutput(name) for name in names]}

    for key, datatype in (("x32", "FP32"), ("x64", "FP64")):
        if key not in data:
            continue
        result = client.infer(model, **request(data[key], datatype))
        outputs[f"{key}_output"] = result.as_numpy("output")
        outputs[f"{key}_class"] = result.as_numpy("class")
        report[f"{key}_version"] = result.get_response(as_json=True)["model_version"] if binding == "grpc" \
            else result.get_response()["model_version"]
    only = client.infer(model, **request(data["x32"], "FP32", names=("output",)))
    outputs["only_output"] = only.as_numpy("output")
    report["only_names"] = [o["name"] for o in (only.get_response(as_json=True) if binding == "grpc"
                                                else only.get_response())["outputs"]]
    if binding == "http":  # the JSON body instead of the binary extension, both ways
        result = client.infer(model, **request(data["x32"], "FP32", names=("output",),
                                              binary_data=False))
        outputs["json_output"] = result.as_numpy("output")

    if binding == "grpc":
        done = queue.Queue()
        client.async_infer(model, **request(data["x32"], "FP32"),
                           callback=lambda result, error: done.put((result, error)))
        result, error = done.get(timeout=30)
        assert error is None, error
        outputs["async_output"] = result.as_numpy("output")

        answers = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        for index in range(3):
            client.async_stream_infer(model, **request(data["x32"][index:index + 2], "FP32"),
                                      request_id=str(index))
        # A bad one in the stream:
        client.async_stream_infer(model, **request(data["x32"][:, :-1].copy(), "FP32"), request_id="bad")
        streamed = [answers.get(timeout=30) for _ in range(4)]
        client.stop_stream()
        for result, error in streamed:
            if error is not None:
                report["stream_error"] = [str(error.status()), error.message()]
            else:
                request_id = result.get_response(as_json=True)["id"]
                outputs[f"stream_{request_id}"] = result.as_numpy("output")
    else:
        async_request = client.async_infer(model, **request(data["x32"], "FP32"))
        outputs["async_output"] = async_request.get_result().as_numpy("output")

    x = data["x32"]
    report["errors"] = {
        "unknown model": _error(lambda: client.infer("no-such-model", **request(x, "FP32"))),
        "unknown model ready": _error(lambda: client.is_model_ready("no-such-model")),
        "wrong version": _error(lambda: client.infer(model, **request(x, "FP32"), model_version="999999")),
        "wrong shape": _error(lambda: client.infer(model, **request(x[:, :-1].copy(), "FP32"))),
        "wrong datatype": _error(lambda: client.infer(model, **request(x.astype(np.int32), "INT32"))),
        "unknown output": _error(lambda: client.infer(model, **request(x, "FP32", names=("logits",)))),
        "oversize": _error(lambda: client.infer(model, **request(
            np.zeros((int(data["max_rows"]) + 1, x.shape[1]), np.float32), "FP32"))),
    }
    if "float32_model" in data:  # FP64 into a float32 model would round: refused
        report["errors"]["lossy datatype"] = _error(lambda: client.infer(
            str(data["float32_model"]), **request(data["x64"], "FP64")))
    np.savez(outputs_path, **outputs)
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
