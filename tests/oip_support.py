"""Shared pieces of the Open Inference Protocol tests: models to infer with, nnserve.v1
Predict to compare."""

import numpy as np

from service_support import classifier_spec, make_batch, pb, to_array, to_tensor

__all__ = ["predict", "trained_models"]


def predict(live, model, x):
    """(outputs, version) of nnserve.v1 Predict."""
    response = live.stub.Predict(pb.PredictRequest(model=model, x=to_tensor(x)), timeout=30)
    return to_array(response.outputs), response.version


def trained_models(live):
    """A float64 classifier "m64" trained 3 steps (version 3) and a float32 one "m32"."""
    live.stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec((4, 8, 3), dtype=pb.DATA_TYPE_FLOAT64),
                                                name="m64"), timeout=30)
    live.stub.CreateModel(pb.CreateModelRequest(spec=classifier_spec((4, 8, 3)), name="m32"), timeout=30)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x, y = make_batch(rng, 8, 4, 3, np.float64)
        live.stub.TrainStep(pb.TrainStepRequest(model="m64", x=to_tensor(x), y=to_tensor(y)), timeout=30)
