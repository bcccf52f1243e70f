"""The synchronous client: `Client` and the `RemoteModel` handles it returns.

Every method is: build the request (messages.py) -> call with the client's deadline and
metadata -> read the reply (messages.py); a grpc.RpcError becomes NNServeError. evaluate
of more rows than one call carries makes one such call per chunk of rows, and predict
sends its chunks over one PredictStream, as planned by chunking.py. train_stream,
predict_stream and fit(stream=True) exchange many batches over one bidirectional stream
(streams.py).
"""

import os
from pathlib import Path

import grpc

from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc

from nnserve.model import fit as training
from .channel import (DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TARGET, DEFAULT_TIMEOUT, connection,
                      model_ref, route_of, routing_metadata)
from .chunking import CHUNKS_IN_FLIGHT
from .errors import NNServeError, encoding
from .jobs import (RemoteDataset, TrainingJob, dataset_ref, job_request, upload_arrays,
                   upload_requests)
from .messages import (ModelInfo, ModelMessages, create_request, delete_request, fit_runs,
                       get_request, import_request, list_request)
from .streams import STREAM_WINDOW, check_window, stream

__all__ = ["Client", "RemoteModel"]


class Client:
    """A connection to an nnserve server; a context manager.

    Parameters
    ----------
    target : str
        "host:port" of the server (default "localhost:50051").
    timeout : float
        Deadline of every call in seconds, retries included (default 30).
    token : str, optional
        Bearer token, sent on every call as ``authorization: Bearer <token>`` metadata.
    tls : None, bool, TLS or grpc.ChannelCredentials
        None/False: plaintext. True: TLS with the system's root certificates. A
        `nnserve.clients.TLS` for other roots, mutual TLS or a server name override.
    max_message_bytes : int
        Largest message sent or received (default 64 MiB, the server's default).

    Raises
    ------
    NNServeError
        From every method, when the call fails; ``code`` is its grpc.StatusCode and
        ``message`` the server's explanation.

    Examples
    --------
    >>> with Client("localhost:50051") as client:                      # doctest: +SKIP
    ...     model = client.create_model([2, 4, 1], ["tanh", "sigmoid"], "binary_cross_entropy")
    ...     model.predict(np.zeros((1, 2), np.float32))
    """

    def __init__(self, target=DEFAULT_TARGET, *, timeout=DEFAULT_TIMEOUT, token=None, tls=None,
                 max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES):
        self._connection = connection(target, timeout=timeout, token=token, tls=tls,
                                      max_message_bytes=max_message_bytes)
        c = self._connection
        if c.credentials is None:
            self._channel = grpc.insecure_channel(c.target, options=c.options)
        else:
            self._channel = grpc.secure_channel(c.target, c.credentials, options=c.options)
        self._stub = pb_grpc.ModelServiceStub(self._channel)
        self._closed = False

    @property
    def target(self):
        return self._connection.target

    @property
    def timeout(self):
        """Deadline of each call, in seconds."""
        return self._connection.timeout

    def _call(self, method, request, timeout=None, route=None):
        if self._closed:
            raise NNServeError(grpc.StatusCode.CANCELLED, "the client is closed", method)
        try:
            return getattr(self._stub, method)(request, timeout=timeout or self._connection.timeout,
                                               metadata=self._metadata(request, route))
        except grpc.RpcError as error:
            raise NNServeError.from_rpc(error, method) from None

    def _stream(self, method, request, timeout=None, route=None):
        """Yield the replies of a server-streaming call that lasts as long as what it watches
        (deadline: `timeout` seconds, None for none); cancelled when the caller stops."""
        if self._closed:
            raise NNServeError(grpc.StatusCode.CANCELLED, "the client is closed", method)
        replies = getattr(self._stub, method)(request, timeout=timeout,
                                              metadata=self._metadata(request, route))
        try:
            yield from replies
        except grpc.RpcError as error:
            raise NNServeError.from_rpc(error, method) from None
        finally:
            replies.cancel()

    def _bidi(self, method, requests, timeout=None, route=""):
        """Open a bidirectional stream that sends `requests` (an iterator gRPC consumes on a
        thread of its own); return the call: an iterator of replies with cancel().
        Deadline: `timeout` seconds for the whole stream, None for none. `route`: the one
        model every message names (the stream's routing key)."""
        if self._closed:
            raise NNServeError(grpc.StatusCode.CANCELLED, "the client is closed", method)
        return getattr(self._stub, method)(requests, timeout=timeout,
                                           metadata=routing_metadata(self._connection.metadata, route))

    def _metadata(self, request, route=None):
        """The call's metadata: the token's, and the routing key (`route`, else the model
        the request names)."""
        return routing_metadata(self._connection.metadata, route_of(request) if route is None else route)

    # -- datasets -----------------------------------------------------------------------

    def upload_dataset(self, x, y, name=None, *, route=None):
        """Upload (x, y) once, for training jobs; return the RemoteDataset.

        route: the id of the model that will train on it. Behind a cluster's proxy a dataset
        lives on the server its upload reached, which must be the model's (docs/cluster.md);
        fit() and start_training() pass it themselves.

        x: (n, n_in) float32 or float64; y: (n,) or (n, k) of float32, float64, int32 or
        int64, as the models that train on it take them (the batch rule; checked when a job
        starts). Streamed in chunks of a few MiB; all or nothing on the server.
        """
        x, y = upload_arrays(x, y)
        requests = upload_requests(x, y, name, self._connection.max_message_bytes)
        try:
            reply = self._stub.UploadDataset(requests, timeout=self._connection.timeout,
                                             metadata=routing_metadata(self._connection.metadata, route))
        except grpc.RpcError as error:
            raise NNServeError.from_rpc(error, "UploadDataset") from None
        return RemoteDataset.from_proto(reply.dataset)

    def get_dataset(self, dataset):
        """Return the RemoteDataset with this id or name (NNServeError NOT_FOUND if none)."""
        request = pb.GetDatasetRequest(dataset=dataset_ref(dataset))
        return RemoteDataset.from_proto(self._call("GetDataset", request).dataset)

    def list_datasets(self, *, page_size=0):
        """Return every dataset on the server, oldest first, following all pages."""
        datasets, token = [], ""
        while True:
            reply = self._call("ListDatasets", pb.ListDatasetsRequest(page_size=page_size, page_token=token))
            datasets += [RemoteDataset.from_proto(message) for message in reply.datasets]
            token = reply.next_page_token
            if not token:
                return datasets

    def delete_dataset(self, dataset, *, route=None):
        """Delete a dataset (id, name or RemoteDataset); its jobs are cancelled first. route:
        upload_dataset's."""
        request = pb.DeleteDatasetRequest(dataset=dataset_ref(dataset))
        return RemoteDataset.from_proto(self._call("DeleteDataset", request, route=route).dataset)

    def get_training_job(self, job_id):
        """Return the TrainingJob handle of a job id."""
        return TrainingJob(self, self._call("GetTrainingJob", pb.GetTrainingJobRequest(job=job_id)).job)

    # -- lifecycle ----------------------------------------------------------------------

    def create_model(self, layers, activations, loss, *, name=None, optimizer="sgd",
                     learning_rate=None, momentum=None, nesterov=None, weight_decay=None,
                     l1=None, betas=None, eps=None, init="he", seed=None,
                     dtype="float32"):
        """Create a model on the server and return its handle.

        The arguments are Network's (see nnserve.model.Network and ModelSpec in
        nnserve.proto); those left None take the server's defaults, which are Network's.

        Parameters
        ----------
        layers : sequence of int
            [n_in, h1, ..., n_out].
        activations : sequence of str
            One per layer after the input: identity, sigmoid, tanh, relu, leaky_relu,
            softmax (output layer only).
        loss : str
            "mse", "binary_cross_entropy" (sigmoid output) or "cross_entropy" (softmax).
        name : str, optional
            A unique name usable instead of the id.

        Returns
        -------
        RemoteModel
            step 0, version 0.

        Raises
        ------
        NNServeError
            INVALID_ARGUMENT (bad spec or name), ALREADY_EXISTS (name taken),
            RESOURCE_EXHAUSTED (a server limit).
        """
        request = create_request(layers, activations, loss, name=name, optimizer=optimizer,
                                 learning_rate=learning_rate, momentum=momentum,
                                 nesterov=nesterov, weight_decay=weight_decay, l1=l1,
                                 betas=betas, eps=eps, init=init, seed=seed, dtype=dtype)
        return RemoteModel(self, ModelInfo.from_proto(self._call("CreateModel", request).model))

    def get_model(self, model):
        """Return the RemoteModel with this id or name (NNServeError NOT_FOUND if none)."""
        with encoding("GetModel"):
            request = get_request(model_ref(model))
        return RemoteModel(self, ModelInfo.from_proto(self._call("GetModel", request).model))

    def iter_models(self, *, page_size=0):
        """Yield a RemoteModel per model, oldest first, fetching page_size at a time (0: 100)."""
        token = ""
        while True:
            reply = self._call("ListModels", list_request(page_size, token))
            for message in reply.models:
                yield RemoteModel(self, ModelInfo.from_proto(message))
            token = reply.next_page_token
            if not token:
                return

    def list_models(self, *, page_size=0):
        """Return every model on the server, oldest first, following all pages."""
        return list(self.iter_models(page_size=page_size))

    def delete_model(self, model):
        """Delete a model by id, name or handle; return its ModelInfo as it was when deleted.

        Raises NNServeError NOT_FOUND when no such model exists.
        """
        with encoding("DeleteModel"):
            request = delete_request(model_ref(model))
        return ModelInfo.from_proto(self._call("DeleteModel", request).model)

    # -- connection ---------------------------------------------------------------------

    def close(self):
        """Close the channel; calls in flight are cancelled. Idempotent."""
        self._closed = True
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f"Client({self.target!r})"

    # -- ONNX ---------------------------------------------------------------------------

    def import_onnx(self, source, *, loss, name=None, optimizer="sgd", learning_rate=None,
                    momentum=None, nesterov=None, weight_decay=None, betas=None, eps=None):
        """Create a model on the server from an ONNX model and return its handle.

        The SDK only moves the bytes (no onnx package needed); the server reads the graph.

        Parameters
        ----------
        source : bytes or str or path-like
            The ONNX model's bytes, or the path of its file: a chain of dense layers as
            torch.onnx and skl2onnx write multi-layer perceptrons (Gemm, or MatMul and Add,
            per layer, each followed by at most one Relu, LeakyRelu with alpha 0.01, PRelu
            with slope 0.01, Sigmoid or Tanh; Softmax after the last), float32 or float64.
            MODEL_FORMAT_ONNX in nnserve.proto has the rules.
        loss : str
            As create_model's: "mse", "binary_cross_entropy" (the graph's output is a
            Sigmoid) or "cross_entropy" (its output is a Softmax).
        name, optimizer, learning_rate, momentum, nesterov, weight_decay, betas, eps
            As create_model's (None: the server's default).

        Returns
        -------
        RemoteModel
            The graph's layers, activations, dtype and weights (bit for bit), step 0,
            version 0.

        Raises
        ------
        NNServeError
            INVALID_ARGUMENT (a graph nnserve cannot hold: the message names the first
            unsupported node; a loss that does not fit its output; bad options or name),
            ALREADY_EXISTS (name taken), RESOURCE_EXHAUSTED (a server limit, or a model
            larger than the max message size).
        OSError
            `source` is a path that cannot be read.
        """
        if isinstance(source, (str, os.PathLike)):
            source = Path(source).read_bytes()
        request = import_request(source, loss, name=name, optimizer=optimizer,
                                 learning_rate=learning_rate, momentum=momentum,
                                 nesterov=nesterov, weight_decay=weight_decay, betas=betas, eps=eps)
        return RemoteModel(self, ModelInfo.from_proto(self._call("ImportModel", request).model))


class RemoteModel(ModelMessages):
    """A model that lives on an nnserve server, with the methods of nnserve.model.Network.

    Obtained from Client.create_model, get_model or list_models. Arrays go out as raw
    bytes and results come back as numpy arrays of the model's dtype. Every method may
    raise NNServeError: NOT_FOUND once the model is deleted, INVALID_ARGUMENT for
    malformed arrays ("got X, expected Y"), RESOURCE_EXHAUSTED above the server's limits.
    """

    def __init__(self, client, info):
        super().__init__(info)
        self._client = client

    @property
    def client(self):
        return self._client

    def refresh(self):
        """Read the model's description from the server (step, version, ...); return self."""
        return self._on_get(self._client._call("GetModel", self._get_request()))

    def delete(self):
        """Delete the model on the server; return its ModelInfo as it was when deleted."""
        return self._on_delete(self._client._call("DeleteModel", self._delete_request()))

    def train_step(self, x, y):
        """Apply one optimizer step on a batch; return the batch loss before the update (a
        StepLoss: a float with the .step and .version the step produced).

        Parameters
        ----------
        x : array (n_samples, n_in)
        y : array
            (n_samples, n_out), or (n_samples,) when n_out is 1; class ids (n_samples,) or
            probability rows (n_samples, n_out) for cross_entropy.

        Returns
        -------
        StepLoss
        """
        return self._on_train_step(self._client._call("TrainStep", self._train_step_request(x, y)))

    def train_stream(self, batches, *, window=STREAM_WINDOW, timeout=None):
        """Apply one optimizer step per batch over one TrainStream; yield the losses in order.

        Each batch is cast and sent as train_step sends it, and each result is what
        train_step returns (a StepLoss: the batch loss before the update, with the .step
        and .version it produced). The batches are sent ahead of their losses, at most
        `window` unanswered at once: a batch is taken from `batches` only when it can be
        sent (until the first loss is read, at most `window` are taken), so a fast producer
        never fills memory, and one read loss lets one more batch go. Nothing is sent until
        the first loss is asked for. `batches` is read on a thread of gRPC's.

        The steps of one stream apply in the order sent; another caller's steps on the
        model may fall between them.

        Parameters
        ----------
        batches : iterable of (x, y)
            x (n_samples, n_in) and y as train_step takes them; any number of batches
            (a generator may be endless: stop reading to stop).
        window : int >= 1
            Batches sent and unanswered at once (default 16).
        timeout : float, optional
            Deadline of the whole stream, in seconds. None (the default): none, as a
            stream lasts as long as its batches come; the client's per-call timeout does not
            apply to streams.

        Yields
        ------
        StepLoss

        Raises
        ------
        ValueError
            window not an integer >= 1 (at the call, before anything is sent).
        NNServeError
            A batch the server refused (INVALID_ARGUMENT for a malformed x or y, NOT_FOUND,
            FAILED_PRECONDITION while a training job trains the model or when the step
            would make the weights non-finite, RESOURCE_EXHAUSTED above the server's max
            rows): raised at that batch's position, after the losses of the batches before
            it. No batch is sent after it; the stream is closed and read to its end, and
            the steps of the batches already sent after it (at most window - 1), which the
            server applied, are the error's `applied_after` (a list of StepLoss, in order).
            A batch the SDK cannot encode is refused in its place the same way (its
            `applied_after` is empty: nothing was sent after it). A failure of the stream
            itself (its deadline, the server's --max-streams, the server going away)
            raises as a unary call's failure does; the steps answered before it stand.
        Exception
            Whatever iterating `batches` raised, at that position, after the losses of
            the batches before it.

        Leaving early (break, or closing the iterator) cancels the stream: the server
        applies no batch it had not read by then, and at most `window` batches were sent
        beyond the last loss read.
        """
        return stream(self._client, self._train_exchange(), iter(batches), check_window(window),
                      timeout)

    def predict_stream(self, xs, *, window=STREAM_WINDOW, timeout=None):
        """Predict each x over one PredictStream; yield the outputs in order.

        Each x is cast and sent as predict sends it (one message: it must fit the server's
        max rows and message size), and each result is what predict returns for it
        (Outputs: (n_samples, n_out) of the model's dtype, with the .version that computed
        them). At most `window` inputs are sent and unanswered at once, taken from `xs`
        only when they can be sent; `xs` is read on a thread of gRPC's. Each message is
        computed on one version of the weights; messages of one stream may see different
        versions when the model trains meanwhile.

        window and timeout are train_stream's (no deadline by default).

        Raises
        ------
        ValueError
            window not an integer >= 1.
        NNServeError
            An x the server refused (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED):
            raised at its position, after the outputs before it; the stream is cancelled
            (the inputs after it are not computed, or their outputs are dropped). As
            train_stream for an x the SDK cannot encode and for stream failures.
        Exception
            Whatever iterating `xs` raised, at that position.

        Leaving early (break, or closing the iterator) cancels the stream.
        """
        return stream(self._client, self._predict_exchange(), iter(xs), check_window(window),
                      timeout)

    def _run(self, plan, make_round):
        """Drive a plan of chunks (chunking.py): make_round(builders) returns a round's
        replies; return the plan's result."""
        try:
            requests = next(plan)
            while True:
                requests = plan.send(make_round(requests))
        except StopIteration as done:
            return done.value
        finally:
            plan.close()

    def _streamed_round(self, requests):
        """One round of Predict chunks over one PredictStream. Its deadline is the client's
        timeout per chunk, as each chunk's unary call would have had."""
        return list(stream(self._client, self._chunk_exchange(), iter(requests), CHUNKS_IN_FLIGHT,
                           self._client.timeout * len(requests)))

    def _unary_round(self, requests):
        """One round of Evaluate chunks, one call after the other."""
        return [self._client._call("Evaluate", build()) for build in requests]

    def predict(self, x, *, batch_size=None):
        """Return the output activations for x (n_samples, n_in): (n_samples, n_out) of dtype.

        Any number of rows: x goes in one Predict call when it fits, else in chunks of
        batch_size rows sent over one PredictStream (two chunks in flight, answered in
        order), whose outputs are concatenated in order. Each chunk's outputs are exactly
        what one call with those rows returns.

        Parameters
        ----------
        x : array (n_samples, n_in)
        batch_size : int >= 1 or None
            Rows per chunk. None: the most rows within both MAX_ROWS_PER_CALL (16384, the
            server's default max_rows_per_request) and the client's max_message_bytes
            (see nnserve.clients.chunking.rows_per_call). Pass a smaller one for a server
            configured with a lower max_rows_per_request or max_message_bytes.

        Raises
        ------
        ValueError
            batch_size not None and not an integer >= 1 (before any call).
        nnserve.clients.errors.MixedVersionsError (an NNServeError, code ABORTED)
            Outputs are never mixed across weights versions: when the model changed between
            the chunks (a train step, set_weights or set_state elsewhere), the chunks answered
            by an older version than the newest one seen are predicted again (over a
            stream of their own), up to MAX_VERSION_ROUNDS (3) times; if the versions still
            differ this is raised.
        NNServeError
            As for one call: the first chunk the server refuses ends the predict with its
            error (the server's limits apply to each chunk; method "PredictStream"), and a
            failed stream with the stream's (its deadline: the client's timeout per chunk).
        """
        request, plan = self._predict_calls(x, batch_size, self._client._connection.max_message_bytes)
        if plan is None:  # one call
            return self._on_predict(self._client._call("Predict", request))
        return self._run(plan, self._streamed_round)

    def evaluate(self, x, y, *, batch_size=None):
        """Return {"loss": float} plus "accuracy" for classification losses; no update.

        Any number of rows, split as predict splits them (batch_size, versions and errors
        alike), but each chunk is a unary Evaluate call, one after the other: Evaluate has
        no stream. Over several calls the metrics are combined as one call over all rows
        computes them: the loss is the mean over samples, so each chunk's loss counts by
        its rows; the accuracy is the fraction of correct answers, counted per chunk. The
        accuracy equals one call's exactly; the loss may differ from it in the last bits
        (float rounding: sums in another order, and one division per chunk).
        """
        request, plan = self._evaluate_calls(x, y, batch_size, self._client._connection.max_message_bytes)
        if plan is None:  # one call
            return self._on_evaluate(self._client._call("Evaluate", request))
        return self._run(plan, self._unary_round)

    def get_state(self):
        """Return {"spec", "step", "version", "weights", "slots"} as Network.get_state() does."""
        return self._on_get_state(self._client._call("GetState", self._get_state_request()))

    def set_state(self, state):
        """Load a state from get_state() (of this model, another or a Network); return the
        Change (step, version) it made.

        Raises NNServeError FAILED_PRECONDITION when the state's layers, activations,
        loss, optimizer or dtype differ from the model's.
        """
        return self._on_set_state(self._client._call("SetState", self._set_state_request(state)))

    def get_weights(self):
        """Return a copy of the weights as [(W (n_in, n_out), b (n_out,)), ...]."""
        return self.get_state()["weights"]

    def set_weights(self, weights):
        """Replace the weights, keeping the optimizer state and the step count.

        One SetWeights call, atomic on the server: a concurrent train step runs wholly
        before or after it, and none is lost. The version goes up by one. Returns the
        Change (step, version) it made.

        Parameters
        ----------
        weights : list of (W, b)
            One pair per layer: W (n_in, n_out) and b (n_out,), of the model's dtype
            (float32 is accepted by a float64 model), finite values.

        Raises
        ------
        NNServeError
            INVALID_ARGUMENT (another number of layers, shape or dtype, NaN or infinity;
            the model is unchanged), NOT_FOUND.
        """
        return self._on_set_weights(self._client._call("SetWeights", self._set_weights_request(weights)))

    def start_training(self, data, y=None, *, epochs, batch_size, shuffle=True, seed=0,
                       validation_data=None, progress_every_steps=0, progress_every_seconds=0.0):
        """Start a training job on the server; return its TrainingJob handle.

        data: a RemoteDataset (uploaded before, reused), or x with y (or an (x, y) pair),
        which are uploaded for this job (cast by the batch rule for this model) and deleted
        when the job has ended and been waited for or cancelled. validation_data likewise.
        The job runs nnserve.model.fit's loop on the server: the same batches, history and
        weights as Network.fit with the same arguments, bit for bit.
        """
        owned = []
        try:
            train = self._dataset_for(data, y, owned, epochs=epochs, batch_size=batch_size,
                                      validation_data=validation_data)
            validation = (None if validation_data is None
                          else self._dataset_for(validation_data, None, owned, epochs=0, batch_size=1))
            request = job_request(self.id, train, validation, epochs=epochs, batch_size=batch_size,
                                  shuffle=shuffle, seed=seed, progress_every_steps=progress_every_steps,
                                  progress_every_seconds=progress_every_seconds)
            job = TrainingJob(self._client, self._client._call("CreateTrainingJob", request).job, owned)
        except BaseException:
            for dataset in owned:
                self._client.delete_dataset(dataset, route=self.id)
            raise
        return job

    def _dataset_for(self, data, y, owned, **fit_arguments):
        arrays = self._fit_arrays(data, y, **fit_arguments)
        if arrays is None:
            return data
        dataset = self._client.upload_dataset(*arrays, route=self.id)
        owned.append(dataset)
        return dataset

    def fit(self, x, y=None, *, epochs, batch_size, shuffle=True, seed=0, validation_data=None,
            progress=None, stream=False):
        """Train for `epochs` passes over (x, y) in mini-batches of batch_size rows, on the
        server.

        By default the data is uploaded once (or x is a RemoteDataset, reused) and a
        training job runs the fit loop next to the weights, its progress streamed back;
        Ctrl-C (KeyboardInterrupt) cancels the job. With stream=True nothing is uploaded:
        the batches are sent over TrainStream (see train_stream), ahead of their losses,
        since their order depends on no loss; with validation_data, each epoch's steps are
        all answered before its Evaluate (one stream per epoch then, else one for the whole
        fit). Ctrl-C cancels the stream; the model keeps the steps applied.

        Either way the batches are those nnserve.model.fit.fit_plan gives, and the history
        is fit_plan's (each epoch's loss the mean of its batch losses weighted by batch
        size, its validation metrics from one Evaluate after it), so a fit here equals
        Network.fit in-process bit for bit: weights, history, step and version (with
        stream=True the validation set must fit in one Evaluate call, or its loss is
        combined from chunks, see evaluate).

        Parameters
        ----------
        x : array (n_samples, n_in), or a RemoteDataset (then no y, and stream=False)
        y : targets with n_samples rows (see train_step)
        epochs : int;  batch_size : int
        shuffle : bool
            A new order each epoch from numpy.random.default_rng(seed).
        validation_data : (x_val, y_val), or a RemoteDataset (stream=False), optional
        progress : bool, optional
            A progress bar on stderr; default: only when stderr is a terminal.
        stream : bool
            Send the batches over TrainStream instead of uploading a dataset for a job:
            for data not worth keeping on the server.

        Returns
        -------
        dict
            "loss" per epoch (batch losses averaged by size), and with validation_data
            "val_loss" and, for classification losses, "val_accuracy".

        Raises
        ------
        ValueError
            Bad epochs, batch_size, rows or validation_data (before any call).
        TypeError
            A RemoteDataset with stream=True.
        NNServeError
            A failed call. With stream=True, a step the server refused ends the fit with
            train_stream's error (its applied_after: the steps applied after it).
        """
        if stream:
            history = self._fit_streamed(x, y, epochs=epochs, batch_size=batch_size,
                                         shuffle=shuffle, seed=seed,
                                         validation_data=validation_data, progress=progress)
        else:
            history = self._fit_job(x, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                                    seed=seed, validation_data=validation_data, progress=progress)
        self.refresh()  # the step and version the fit left
        return history

    def _fit_job(self, x, y, *, epochs, batch_size, shuffle, seed, validation_data, progress):
        job = self.start_training(x, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                                  seed=seed, validation_data=validation_data,
                                  progress_every_seconds=0.25 if progress is not False else 0.0)
        bar = training.progress_bar(progress, total=job.total_steps)
        try:
            for event in job.watch():
                if bar is not None:
                    bar.update(event.step - bar.n)
                    if event.history["loss"]:
                        bar.set_postfix({"epoch": event.epoch, "loss": f"{event.history['loss'][-1]:.4g}"},
                                        refresh=False)
            return job.wait()
        except KeyboardInterrupt:
            job.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()

    def _fit_streamed(self, x, y, *, validation_data, progress, **order):
        """fit_plan driven with the losses of its batches, sent ahead over TrainStream by
        runs of the same batches (fit_runs: epoch_batches with the same arguments)."""
        x, y = self._streamed_fit_arrays(x, y, epochs=order["epochs"], batch_size=order["batch_size"],
                                         validation_data=validation_data)
        losses = self._losses(fit_runs(x, y, validating=validation_data is not None, **order))
        plan = training.fit_plan(x, y, **order, validation_data=validation_data, progress=progress)
        try:
            call = next(plan)
            while True:
                name, *arguments = call
                call = plan.send(next(losses) if name == "train_step" else self.evaluate(*arguments))
        except StopIteration as done:
            next(losses, None)  # reads the last stream to its end (every batch answered)
            return done.value
        finally:
            plan.close()
            losses.close()  # cancels a stream left early

    def _losses(self, runs):
        """The losses of runs of batches, one TrainStream each, opened one after the other."""
        for run in runs:
            yield from self.train_stream(run)

    def to_onnx(self, path=None):
        """Return the model as ONNX bytes, and write them to `path` when given.

        One ExportModel call: the weights of one version, bit for bit, as a graph that
        onnxruntime and other ONNX tools run (opset 17; MODEL_FORMAT_ONNX in nnserve.proto
        says how each layer is written; the optimizer state is not exported). Its
        metadata_props name the producer, the step, the weights version, the loss and the
        model's id and name. The SDK only moves the bytes (no onnx package needed).

        Returns
        -------
        nnserve.model.ExportedModel
            The bytes, with the `.step` and `.version` of the weights they hold.

        Raises
        ------
        NNServeError
            NOT_FOUND, RESOURCE_EXHAUSTED (a model larger than the max message size).
        OSError
            `path` cannot be written.
        """
        exported = self._on_export(self._client._call("ExportModel", self._export_request()))
        if path is not None:
            Path(path).write_bytes(exported)
        return exported
