"""The synchronous client: `Client` and the `RemoteModel` handles it returns.

Every method is: build the request (messages.py) -> call with the client's deadline and
metadata -> read the reply (messages.py); a grpc.RpcError becomes NNServeError. predict and
evaluate of more rows than one call carries make one such call per chunk of rows, as
planned by messages.py (each call has the client's deadline).
"""

import grpc

from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc

from nnserve.model import fit as training
from .channel import (DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TARGET, DEFAULT_TIMEOUT, connection,
                      model_ref)
from .errors import NNServeError, encoding
from .jobs import (RemoteDataset, TrainingJob, dataset_ref, job_request, upload_arrays,
                   upload_requests)
from .messages import (ModelInfo, ModelMessages, create_request, delete_request, get_request,
                       list_request)

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

    def _call(self, method, request, timeout=None):
        if self._closed:
            raise NNServeError(grpc.StatusCode.CANCELLED, "the client is closed", method)
        try:
            return getattr(self._stub, method)(request, timeout=timeout or self._connection.timeout,
                                               metadata=self._connection.metadata)
        except grpc.RpcError as error:
            raise NNServeError.from_rpc(error, method) from None

    def _stream(self, method, request, timeout=None):
        """Yield the replies of a server-streaming call that lasts as long as what it watches
        (deadline: `timeout` seconds, None for none); cancelled when the caller stops."""
        if self._closed:
            raise NNServeError(grpc.StatusCode.CANCELLED, "the client is closed", method)
        replies = getattr(self._stub, method)(request, timeout=timeout,
                                              metadata=self._connection.metadata)
        try:
            yield from replies
        except grpc.RpcError as error:
            raise NNServeError.from_rpc(error, method) from None
        finally:
            replies.cancel()

    # -- datasets -----------------------------------------------------------------------

    def upload_dataset(self, x, y, name=None):
        """Upload (x, y) once, for training jobs; return the RemoteDataset.

        x: (n, n_in) float32 or float64; y: (n,) or (n, k) of float32, float64, int32 or
        int64, as the models that train on it take them (the batch rule; checked when a job
        starts). Streamed in chunks of a few MiB; all or nothing on the server.
        """
        x, y = upload_arrays(x, y)
        requests = upload_requests(x, y, name, self._connection.max_message_bytes)
        try:
            reply = self._stub.UploadDataset(requests, timeout=self._connection.timeout,
                                             metadata=self._connection.metadata)
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

    def delete_dataset(self, dataset):
        """Delete a dataset (id, name or RemoteDataset); its jobs are cancelled first."""
        request = pb.DeleteDatasetRequest(dataset=dataset_ref(dataset))
        return RemoteDataset.from_proto(self._call("DeleteDataset", request).dataset)

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

    def _run(self, method, plan):
        """Make a plan's calls (messages.py: it yields requests, is sent replies); return its result."""
        try:
            request = next(plan)
            while True:
                request = plan.send(self._client._call(method, request))
        except StopIteration as done:
            return done.value
        finally:
            plan.close()

    def predict(self, x, *, batch_size=None):
        """Return the output activations for x (n_samples, n_in): (n_samples, n_out) of dtype.

        Any number of rows: x goes in one Predict call when it fits, else in chunks of
        batch_size rows, one call each, made one after the other, whose outputs are
        concatenated in order. Each chunk's outputs are exactly what one call with those
        rows returns.

        Parameters
        ----------
        x : array (n_samples, n_in)
        batch_size : int >= 1 or None
            Rows per call. None: the most rows within both MAX_ROWS_PER_CALL (16384, the
            server's default max_rows_per_request) and the client's max_message_bytes
            (see nnserve.clients.chunking.rows_per_call). Pass a smaller one for a server
            configured with a lower max_rows_per_request or max_message_bytes.

        Raises
        ------
        ValueError
            batch_size not None and not an integer >= 1 (before any call).
        nnserve.clients.errors.MixedVersionsError (an NNServeError, code ABORTED)
            Outputs are never mixed across weights versions: when the model changed between
            the calls (a train step, set_weights or set_state elsewhere), the chunks answered
            by an older version than the newest one seen are predicted again, up to
            MAX_VERSION_ROUNDS (3) times; if the versions still differ this is raised.
        NNServeError
            As for one call: the first chunk's call that fails ends the predict with its
            error (the server's limits apply to each call).
        """
        request, plan = self._predict_calls(x, batch_size, self._client._connection.max_message_bytes)
        if plan is None:  # one call
            return self._on_predict(self._client._call("Predict", request))
        return self._run("Predict", plan)

    def evaluate(self, x, y, *, batch_size=None):
        """Return {"loss": float} plus "accuracy" for classification losses; no update.

        Any number of rows, split into calls as predict splits them (batch_size, versions
        and errors alike). Over several calls the metrics are combined as one call over all
        rows computes them: the loss is the mean over samples, so each chunk's loss counts
        by its rows; the accuracy is the fraction of correct answers, counted per chunk.
        The accuracy equals one call's exactly; the loss may differ from it in the last
        bits (float rounding: sums in another order, and one division per chunk).
        """
        request, plan = self._evaluate_calls(x, y, batch_size, self._client._connection.max_message_bytes)
        if plan is None:  # one call
            return self._on_evaluate(self._client._call("Evaluate", request))
        return self._run("Evaluate", plan)

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
                self._client.delete_dataset(dataset)
            raise
        return job

    def _dataset_for(self, data, y, owned, **fit_arguments):
        arrays = self._arrays_to_upload(data, y, **fit_arguments)
        if arrays is None:
            return data
        dataset = self._client.upload_dataset(*arrays)
        owned.append(dataset)
        return dataset

    def fit(self, x, y=None, *, epochs, batch_size, shuffle=True, seed=0, validation_data=None,
            progress=None):
        """Train for `epochs` passes over (x, y) in mini-batches of batch_size rows, on the
        server: the data is uploaded once (or x is a RemoteDataset, reused) and a training
        job runs the fit loop next to the weights, its progress streamed back.

        The batches are those nnserve.model.fit.fit_plan gives, so a fit here equals
        Network.fit in-process bit for bit. Ctrl-C (KeyboardInterrupt) cancels the job.

        Parameters
        ----------
        x : array (n_samples, n_in), or a RemoteDataset (then no y)
        y : targets with n_samples rows (see train_step)
        epochs : int;  batch_size : int
        shuffle : bool
            A new order each epoch from numpy.random.default_rng(seed).
        validation_data : (x_val, y_val) or RemoteDataset, optional
        progress : bool, optional
            A progress bar on stderr; default: only when stderr is a terminal.

        Returns
        -------
        dict
            "loss" per epoch (batch losses averaged by size), and with validation_data
            "val_loss" and, for classification losses, "val_accuracy".
        """
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
            history = job.wait()
        except KeyboardInterrupt:
            job.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()
        self.refresh()  # the step and version the job left
        return history
