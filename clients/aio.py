"""The asyncio client: `AsyncClient` and `AsyncRemoteModel`, on grpc.aio.

The same surface as Client and RemoteModel, every call awaitable (train_stream and
predict_stream are async iterators); the requests and replies are built and read by the
same code (messages.py, chunking.py, streams.py), so both clients send and return exactly
the same things. Create an AsyncClient inside the event loop that uses it.
"""

import asyncio
import contextlib
import os
from pathlib import Path

import grpc
import grpc.aio

from nnserve.model import fit as training
from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc

from .channel import (DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TARGET, DEFAULT_TIMEOUT, connection,
                      model_ref, route_of, routing_metadata)
from .chunking import CHUNKS_IN_FLIGHT
from .errors import NNServeError, encoding
from .jobs import (AsyncTrainingJob, RemoteDataset, dataset_ref, job_request, upload_arrays,
                   upload_requests)
from .messages import (ModelInfo, ModelMessages, create_request, delete_request, fit_runs,
                       get_request, import_request, list_request)
from .streams import STREAM_WINDOW, async_items, check_window, stream_async

__all__ = ["AsyncClient", "AsyncRemoteModel"]


class AsyncClient:
    """An asyncio connection to an nnserve server; an async context manager.

    Takes the arguments of Client (target, timeout, token, tls, max_message_bytes) and has
    its methods as coroutines. Concurrent calls share one HTTP/2 connection.

    Examples
    --------
    >>> async with AsyncClient("localhost:50051") as client:           # doctest: +SKIP
    ...     model = await client.get_model("digits")
    ...     outputs = await asyncio.gather(*(model.predict(x) for x in batches))
    """

    def __init__(self, target=DEFAULT_TARGET, *, timeout=DEFAULT_TIMEOUT, token=None, tls=None,
                 max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES):
        self._connection = connection(target, timeout=timeout, token=token, tls=tls,
                                      max_message_bytes=max_message_bytes)
        c = self._connection
        if c.credentials is None:
            self._channel = grpc.aio.insecure_channel(c.target, options=c.options)
        else:
            self._channel = grpc.aio.secure_channel(c.target, c.credentials, options=c.options)
        self._stub = pb_grpc.ModelServiceStub(self._channel)
        self._closed = False

    @property
    def target(self):
        return self._connection.target

    @property
    def timeout(self):
        return self._connection.timeout

    async def _call(self, method, request, timeout=None, route=None):
        if self._closed:
            raise NNServeError(grpc.StatusCode.CANCELLED, "the client is closed", method)
        try:
            return await getattr(self._stub, method)(
                request, timeout=timeout or self._connection.timeout,
                metadata=self._metadata(request, route))
        except grpc.RpcError as error:
            raise NNServeError.from_rpc(error, method) from None

    async def _stream(self, method, request, timeout=None, route=None):
        """Yield the replies of a server-streaming call (deadline: `timeout` seconds, None for
        none); cancelled when the caller stops iterating."""
        if self._closed:
            raise NNServeError(grpc.StatusCode.CANCELLED, "the client is closed", method)
        call = getattr(self._stub, method)(request, timeout=timeout,
                                           metadata=self._metadata(request, route))
        try:
            async for reply in call:
                yield reply
        except grpc.RpcError as error:
            raise NNServeError.from_rpc(error, method) from None
        finally:
            call.cancel()

    def _bidi(self, method, requests, timeout=None, route=""):
        """Open a bidirectional stream that sends `requests` (an async iterator grpc.aio
        consumes in a task of its own); return the call: an async iterator of replies with
        cancel(). Deadline: `timeout` seconds for the whole stream, None for none. `route`:
        the one model every message names."""
        if self._closed:
            raise NNServeError(grpc.StatusCode.CANCELLED, "the client is closed", method)
        return getattr(self._stub, method)(requests, timeout=timeout,
                                           metadata=routing_metadata(self._connection.metadata, route))

    def _metadata(self, request, route=None):
        """The call's metadata: the token's and the routing key (Client._metadata)."""
        return routing_metadata(self._connection.metadata, route_of(request) if route is None else route)

    async def upload_dataset(self, x, y, name=None, *, route=None):
        """Upload (x, y) once, for training jobs; see Client.upload_dataset."""
        x, y = upload_arrays(x, y)
        requests = upload_requests(x, y, name, self._connection.max_message_bytes)
        try:
            reply = await self._stub.UploadDataset(
                requests, timeout=self._connection.timeout,
                metadata=routing_metadata(self._connection.metadata, route))
        except grpc.RpcError as error:
            raise NNServeError.from_rpc(error, "UploadDataset") from None
        return RemoteDataset.from_proto(reply.dataset)

    async def get_dataset(self, dataset):
        """Return the RemoteDataset with this id or name (NNServeError NOT_FOUND if none)."""
        reply = await self._call("GetDataset", pb.GetDatasetRequest(dataset=dataset_ref(dataset)))
        return RemoteDataset.from_proto(reply.dataset)

    async def list_datasets(self, *, page_size=0):
        """Return every dataset on the server, oldest first, following all pages."""
        datasets, token = [], ""
        while True:
            reply = await self._call("ListDatasets", pb.ListDatasetsRequest(page_size=page_size,
                                                                             page_token=token))
            datasets += [RemoteDataset.from_proto(message) for message in reply.datasets]
            token = reply.next_page_token
            if not token:
                return datasets

    async def delete_dataset(self, dataset, *, route=None):
        """Delete a dataset (id, name or RemoteDataset); its jobs are cancelled first."""
        reply = await self._call("DeleteDataset", pb.DeleteDatasetRequest(dataset=dataset_ref(dataset)),
                                 route=route)
        return RemoteDataset.from_proto(reply.dataset)

    async def get_training_job(self, job_id):
        """Return the AsyncTrainingJob handle of a job id."""
        reply = await self._call("GetTrainingJob", pb.GetTrainingJobRequest(job=job_id))
        return AsyncTrainingJob(self, reply.job)

    async def create_model(self, layers, activations, loss, *, name=None, optimizer="sgd",
                           learning_rate=None, momentum=None, nesterov=None, weight_decay=None,
                           l1=None, betas=None, eps=None, init="he", seed=None,
                           dtype="float32"):
        """Create a model on the server; see Client.create_model."""
        request = create_request(layers, activations, loss, name=name, optimizer=optimizer,
                                 learning_rate=learning_rate, momentum=momentum,
                                 nesterov=nesterov, weight_decay=weight_decay, l1=l1,
                                 betas=betas, eps=eps, init=init, seed=seed, dtype=dtype)
        reply = await self._call("CreateModel", request)
        return AsyncRemoteModel(self, ModelInfo.from_proto(reply.model))

    async def get_model(self, model):
        """Return the AsyncRemoteModel with this id or name (NNServeError NOT_FOUND if none)."""
        with encoding("GetModel"):
            request = get_request(model_ref(model))
        reply = await self._call("GetModel", request)
        return AsyncRemoteModel(self, ModelInfo.from_proto(reply.model))

    async def iter_models(self, *, page_size=0):
        """Yield an AsyncRemoteModel per model, oldest first, one page at a time."""
        token = ""
        while True:
            reply = await self._call("ListModels", list_request(page_size, token))
            for message in reply.models:
                yield AsyncRemoteModel(self, ModelInfo.from_proto(message))
            token = reply.next_page_token
            if not token:
                return

    async def list_models(self, *, page_size=0):
        """Return every model on the server, oldest first, following all pages."""
        return [model async for model in self.iter_models(page_size=page_size)]

    async def delete_model(self, model):
        """Delete a model by id, name or handle; return its ModelInfo when deleted."""
        with encoding("DeleteModel"):
            request = delete_request(model_ref(model))
        return ModelInfo.from_proto((await self._call("DeleteModel", request)).model)

    async def close(self):
        """Close the channel; calls in flight are cancelled. Idempotent."""
        self._closed = True
        await self._channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.close()

    def __repr__(self):
        return f"AsyncClient({self.target!r})"

    async def import_onnx(self, source, *, loss, name=None, optimizer="sgd", learning_rate=None,
                          momentum=None, nesterov=None, weight_decay=None, betas=None, eps=None):
        """Create a model on the server from an ONNX model (bytes or a file's path); see
        Client.import_onnx. A file is read off the event loop's thread."""
        if isinstance(source, (str, os.PathLike)):
            source = await asyncio.to_thread(Path(source).read_bytes)
        request = import_request(source, loss, name=name, optimizer=optimizer,
                                 learning_rate=learning_rate, momentum=momentum,
                                 nesterov=nesterov, weight_decay=weight_decay, betas=betas, eps=eps)
        reply = await self._call("ImportModel", request)
        return AsyncRemoteModel(self, ModelInfo.from_proto(reply.model))


class AsyncRemoteModel(ModelMessages):
    """RemoteModel for AsyncClient: the same methods, as coroutines (see RemoteModel)."""

    def __init__(self, client, info):
        super().__init__(info)
        self._client = client

    @property
    def client(self):
        return self._client

    async def refresh(self):
        """Read the model's description from the server; return self."""
        return self._on_get(await self._client._call("GetModel", self._get_request()))

    async def delete(self):
        """Delete the model on the server; return its ModelInfo when deleted."""
        return self._on_delete(await self._client._call("DeleteModel", self._delete_request()))

    async def train_step(self, x, y):
        """Apply one optimizer step; return the batch loss before the update."""
        request = self._train_step_request(x, y)
        return self._on_train_step(await self._client._call("TrainStep", request))

    def train_stream(self, batches, *, window=STREAM_WINDOW, timeout=None):
        """Apply one optimizer step per batch over one TrainStream; an async iterator of the
        losses (StepLoss) in order. RemoteModel.train_stream's semantics (window, timeout,
        errors and their applied_after), with an asyncio.Semaphore for the window.

        `batches` is an async or a sync iterable of (x, y); a sync one is read on the event
        loop, so it should not block. Leaving early cancels the stream once the iterator is
        closed: `await it.aclose()`, leaving an `async with contextlib.aclosing(it)` block,
        or soon after the event loop finalizes an iterator left unreferenced.
        """
        return stream_async(self._client, self._train_exchange(), async_items(batches),
                            check_window(window), timeout)

    def predict_stream(self, xs, *, window=STREAM_WINDOW, timeout=None):
        """Predict each x over one PredictStream; an async iterator of the outputs (Outputs)
        in order. RemoteModel.predict_stream's semantics; `xs` an async or sync iterable, as
        train_stream's batches."""
        return stream_async(self._client, self._predict_exchange(), async_items(xs),
                            check_window(window), timeout)

    async def _run(self, plan, make_round):
        """Drive a plan of chunks (chunking.py): `await make_round(builders)` returns a
        round's replies; return the plan's result.

        The rounds are the sync client's: a predict's chunks go over one PredictStream
        (CHUNKS_IN_FLIGHT sent ahead, computed one after the other by the server: a chunk
        is already as large as the server takes, so it keeps a server thread busy by
        itself), and an evaluate's chunks are unary calls made one after the other, not
        gathered (chunks in flight together would hold several chunks in memory at once,
        count several times against the server's max_concurrent_rpcs, and answer in
        another order than the sync client's). So the two clients return the same results
        bit for bit. Callers wanting parallelism gather several predicts.
        """
        try:
            requests = next(plan)
            while True:
                requests = plan.send(await make_round(requests))
        except StopIteration as done:
            return done.value
        finally:
            plan.close()

    async def _streamed_round(self, requests):
        """One round of Predict chunks over one PredictStream (deadline: the client's timeout
        per chunk)."""
        return [reply async for reply in stream_async(
            self._client, self._chunk_exchange(), async_items(requests), CHUNKS_IN_FLIGHT,
            self._client.timeout * len(requests))]

    async def _unary_round(self, requests):
        """One round of Evaluate chunks, one call after the other."""
        return [await self._client._call("Evaluate", build()) for build in requests]

    async def predict(self, x, *, batch_size=None):
        """Return the output activations for x: (n_samples, n_out) of the model's dtype.

        Large x is split and sent exactly as RemoteModel.predict sends it (same batch_size,
        one PredictStream, same version rule, same errors), so the results are the same bit
        for bit.
        """
        request, plan = self._predict_calls(x, batch_size, self._client._connection.max_message_bytes)
        if plan is None:  # one call
            return self._on_predict(await self._client._call("Predict", request))
        return await self._run(plan, self._streamed_round)

    async def evaluate(self, x, y, *, batch_size=None):
        """Return {"loss": float} plus "accuracy" for classification losses; no update.

        Split into unary calls and combined exactly as RemoteModel.evaluate does (see there;
        Evaluate has no stream).
        """
        request, plan = self._evaluate_calls(x, y, batch_size, self._client._connection.max_message_bytes)
        if plan is None:  # one call
            return self._on_evaluate(await self._client._call("Evaluate", request))
        return await self._run(plan, self._unary_round)

    async def get_state(self):
        """Return {"spec", "step", "version", "weights", "slots"} as Network.get_state() does."""
        return self._on_get_state(await self._client._call("GetState", self._get_state_request()))

    async def set_state(self, state):
        """Load a state from get_state(); see RemoteModel.set_state."""
        request = self._set_state_request(state)
        return self._on_set_state(await self._client._call("SetState", request))

    async def get_weights(self):
        """Return a copy of the weights as [(W, b), ...]."""
        return (await self.get_state())["weights"]

    async def set_weights(self, weights):
        """Replace the weights in one atomic SetWeights call; see RemoteModel.set_weights."""
        request = self._set_weights_request(weights)
        return self._on_set_weights(await self._client._call("SetWeights", request))

    async def start_training(self, data, y=None, *, epochs, batch_size, shuffle=True, seed=0,
                             validation_data=None, progress_every_steps=0,
                             progress_every_seconds=0.0):
        """Start a training job on the server; see RemoteModel.start_training."""
        owned = []
        try:
            train = await self._dataset_for(data, y, owned, epochs=epochs, batch_size=batch_size,
                                            validation_data=validation_data)
            validation = (None if validation_data is None
                          else await self._dataset_for(validation_data, None, owned, epochs=0, batch_size=1))
            request = job_request(self.id, train, validation, epochs=epochs, batch_size=batch_size,
                                  shuffle=shuffle, seed=seed, progress_every_steps=progress_every_steps,
                                  progress_every_seconds=progress_every_seconds)
            reply = await self._client._call("CreateTrainingJob", request)
        except BaseException:
            for dataset in owned:
                await self._client.delete_dataset(dataset, route=self.id)
            raise
        return AsyncTrainingJob(self._client, reply.job, owned)

    async def _dataset_for(self, data, y, owned, **fit_arguments):
        arrays = self._fit_arrays(data, y, **fit_arguments)
        if arrays is None:
            return data
        dataset = await self._client.upload_dataset(*arrays, route=self.id)
        owned.append(dataset)
        return dataset

    async def fit(self, x, y=None, *, epochs, batch_size, shuffle=True, seed=0,
                  validation_data=None, progress=None, stream=False):
        """Train on the server; see RemoteModel.fit. By default as a training job, its
        progress streamed back (cancelling the awaiting task cancels the job); with
        stream=True over TrainStream, the batches sent ahead of their losses (cancelling
        the task cancels the stream). The same batches and history as Network.fit, bit for
        bit."""
        if stream:
            history = await self._fit_streamed(x, y, epochs=epochs, batch_size=batch_size,
                                               shuffle=shuffle, seed=seed,
                                               validation_data=validation_data, progress=progress)
        else:
            history = await self._fit_job(x, y, epochs=epochs, batch_size=batch_size,
                                          shuffle=shuffle, seed=seed,
                                          validation_data=validation_data, progress=progress)
        await self.refresh()  # the step and version the fit left
        return history

    async def _fit_job(self, x, y, *, epochs, batch_size, shuffle, seed, validation_data,
                       progress):
        job = await self.start_training(x, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                                        seed=seed, validation_data=validation_data,
                                        progress_every_seconds=0.25 if progress is not False else 0.0)
        bar = training.progress_bar(progress, total=job.total_steps)
        try:
            async for event in job.watch():
                if bar is not None:
                    bar.update(event.step - bar.n)
            return await job.wait()
        except (KeyboardInterrupt, asyncio.CancelledError):
            await asyncio.shield(job.cancel())
            raise
        finally:
            if bar is not None:
                bar.close()

    async def _fit_streamed(self, x, y, *, validation_data, progress, **order):
        """RemoteModel._fit_streamed, awaited."""
        x, y = self._streamed_fit_arrays(x, y, epochs=order["epochs"], batch_size=order["batch_size"],
                                         validation_data=validation_data)
        losses = self._losses(fit_runs(x, y, validating=validation_data is not None, **order))
        plan = training.fit_plan(x, y, **order, validation_data=validation_data, progress=progress)
        try:
            call = next(plan)
            while True:
                name, *arguments = call
                result = await (anext(losses) if name == "train_step" else self.evaluate(*arguments))
                call = plan.send(result)
        except StopIteration as done:
            await anext(losses, None)  # reads the last stream to its end (every batch answered)
            return done.value
        finally:
            plan.close()
            await losses.aclose()  # cancels a stream left early

    async def _losses(self, runs):
        """The losses of runs of batches, one TrainStream each, opened one after the other."""
        for run in runs:
            async with contextlib.aclosing(self.train_stream(run)) as losses:
                async for loss in losses:
                    yield loss

    async def to_onnx(self, path=None):
        """Return the model as ONNX bytes (an ExportedModel with .step and .version), and
        write them to `path` when given, off the event loop's thread; see RemoteModel.to_onnx."""
        exported = self._on_export(await self._client._call("ExportModel", self._export_request()))
        if path is not None:
            await asyncio.to_thread(Path(path).write_bytes, exported)
        return exported
