"""tritonclient's side of the Open Inference Protocol tests, in the test process.

`run_triton_client(binding, target, model, **data)` calls, with tritonclient.grpc or
tritonclient.http against `target`, every method the tests check, on `data` (arrays x32
and x64, max_rows and, optionally, float32_model: a model FP64 inputs must be refused by),
and returns (report, outputs): everything but the outputs (metadata, config,
readiness, the errors met) as dicts and lists, and the outputs as arrays. Over HTTP, infer
also goes with JSON bodies both ways and with binary inputs and JSON outputs, and without
requested outputs (binary_data_output); the errors' status is the HTTP status.
"""

import importlib
import queue

import numpy as np

__all__ = ["run_triton_client"]


# tritonclient is imported by the functions that use it: the modules importing this one
# skip their tritonclient tests, and only those, when it is not installed.
def _error(call):
    """[status, message] of the exception a call raises, or None if it returns."""
    from tritonclient.utils import InferenceServerException

    try:
        call()
    except InferenceServerException as error:
        return [str(error.status()), error.message()]
    return None


def _as_dict(message):
    """A gRPC response as a dict; tritonclient.http's answers are JSON already."""
    if isinstance(message, (dict, list)):
        return message
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def run_triton_client(binding, target, model, **data):
    """(report, outputs) of tritonclient.`binding` (grpc or http) against `target`."""
    client_module = importlib.import_module(f"tritonclient.{binding}")
    client = client_module.InferenceServerClient(target)
    try:
        return _exercise(client_module, client, binding, model, data)
    finally:
        client.close()


def _exercise(client_module, client, binding, model, data):
    report = {"live": client.is_server_live(), "ready": client.is_server_ready(),
              "model_ready": client.is_model_ready(model),
              "metadata": _as_dict(client.get_server_metadata()),
              "model_metadata": _as_dict(client.get_model_metadata(model)),
              "model_config": _as_dict(client.get_model_config(model)),
              "index": _as_dict(client.get_model_repository_index())}
    outputs = {}

    def request(x, datatype, names=("output", "class"), binary_in=True, binary_out=True):
        tensor = client_module.InferInput("input", list(x.shape), datatype)
        if binding == "grpc":
            tensor.set_data_from_numpy(x)
            wanted = [client_module.InferRequestedOutput(name) for name in names]
        else:
            tensor.set_data_from_numpy(x, binary_data=binary_in)
            wanted = [client_module.InferRequestedOutput(name, binary_data=binary_out) for name in names]
        return {"inputs": [tensor], "outputs": wanted}

    def response(result):
        return result.get_response(as_json=True) if binding == "grpc" else result.get_response()

    for key, datatype in (("x32", "FP32"), ("x64", "FP64")):
        if key not in data:
            continue
        result = client.infer(model, **request(data[key], datatype))
        outputs[f"{key}_output"] = result.as_numpy("output")
        outputs[f"{key}_class"] = result.as_numpy("class")
        report[f"{key}_version"] = response(result)["model_version"]
    only = client.infer(model, **request(data["x32"], "FP32", names=("output",)))
    outputs["only_output"] = only.as_numpy("output")
    report["only_names"] = [o["name"] for o in response(only)["outputs"]]
    if binding == "http":
        for key, binary_in, binary_out in (("json", False, False), ("mixed", True, False)):
            result = client.infer(model, **request(data["x32"], "FP32", binary_in=binary_in,
                                                   binary_out=binary_out))
            outputs[f"{key}_output"] = result.as_numpy("output")
            outputs[f"{key}_class"] = result.as_numpy("class")
            report[f"{key}_binary"] = ["binary_data_size" in o.get("parameters", {})
                                       for o in response(result)["outputs"]]
        tensor = client_module.InferInput("input", list(data["x32"].shape), "FP32")
        tensor.set_data_from_numpy(data["x32"])
        result = client.infer(model, inputs=[tensor])  # no outputs named: binary_data_output
        outputs["default_output"] = result.as_numpy("output")
        report["default_names"] = [o["name"] for o in response(result)["outputs"]]
        report["unknown_model_ready"] = client.is_model_ready("no-such-model")

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
        "wrong version": _error(lambda: client.infer(model, **request(x, "FP32"), model_version="999999")),
        "wrong shape": _error(lambda: client.infer(model, **request(x[:, :-1].copy(), "FP32"))),
        "wrong datatype": _error(lambda: client.infer(model, **request(x.astype(np.int32), "INT32"))),
        "unknown output": _error(lambda: client.infer(model, **request(x, "FP32", names=("logits",)))),
        "oversize": _error(lambda: client.infer(model, **request(
            np.zeros((int(data["max_rows"]) + 1, x.shape[1]), np.float32), "FP32"))),
    }
    if binding == "grpc":  # tritonclient.http answers False (the status is 404): unknown_model_ready
        report["errors"]["unknown model ready"] = _error(lambda: client.is_model_ready("no-such-model"))
    if "float32_model" in data:  # FP64 into a float32 model would round: refused
        report["errors"]["lossy datatype"] = _error(lambda: client.infer(
            data["float32_model"], **request(data["x64"], "FP64")))
    return report, outputs
