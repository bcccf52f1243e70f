"""nnserve's Python client SDK: numpy in, numpy out, over gRPC.

    from nnserve.clients import Client

    with Client("localhost:50051") as client:
        model = client.create_model([2, 4, 1], ["tanh", "sigmoid"], "binary_cross_entropy",
                                    learning_rate=0.5, init="xavier", seed=1)
        history = model.fit(x, y, epochs=2000, batch_size=4)
        outputs = model.predict(x)

`Client` / `RemoteModel` are synchronous, `AsyncClient` / `AsyncRemoteModel` their asyncio
twins; every failure is an `NNServeError` with the gRPC status code and the server's
message. `RemoteModel.train_stream` / `predict_stream` (and `fit(..., stream=True)`) send
many batches over one bidirectional stream, a window of them in flight (streams.py). The scikit-learn estimators `NNClassifier` and `NNRegressor` are imported on
first use (they need scikit-learn, the `sklearn` extra). This package needs only numpy,
grpcio, protobuf and tqdm: it never imports numba.
"""

from .aio import AsyncClient, AsyncRemoteModel
from .channel import DEFAULT_TARGET, DEFAULT_TIMEOUT, TLS
from .client import Client, RemoteModel
from .errors import MixedVersionsError, NNServeError
from .jobs import AsyncTrainingJob, JobEvent, RemoteDataset, TrainingJob
from .messages import ModelInfo

__all__ = ["DEFAULT_TARGET", "DEFAULT_TIMEOUT", "TLS", "AsyncClient", "AsyncRemoteModel",
           "AsyncTrainingJob", "Client", "JobEvent", "MixedVersionsError", "ModelInfo",
           "NNClassifier", "NNRegressor", "NNServeError", "RemoteDataset", "RemoteModel",
           "TrainingJob"]


def __getattr__(name):
    if name in ("NNClassifier", "NNRegressor"):
        from . import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
