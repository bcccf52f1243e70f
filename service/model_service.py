"""ModelService over gRPC, kept thin: decode, call the registry, encode.

Methods raise domain errors (service.errors, the codecs' InvalidMessage); the
ErrorInterceptor maps them to status codes. Tensors are decoded before anything else, so
a byte-length mismatch is reported whatever else is wrong with the request. to_array
copies the bytes into writable arrays: numba types read-only buffers separately, and
would compile (or load) other kernel variants than the ones warmup() prepared.
"""

from google.protobuf.timestamp_pb2 import Timestamp

from nnserve.model.thread_budget import BUDGET
from nnserve.v1 import nnserve_pb2 as pb
from nnserve.v1 import nnserve_pb2_grpc as pb_grpc
from nnserve.v1.models import (format_from_proto, layers_from_proto, options_from_proto,
                               spec_from_proto, spec_to_proto, state_from_proto, state_to_proto)
from nnserve.v1.tensors import to_array, to_tensor

from .errors import DOMAIN_ERRORS, InvalidArgument, status_code

__all__ = ["SERVICE_NAME", "ModelServicer", "timestamp"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ModelService"].full_name  # "nnserve.v1.ModelService"


def timestamp(time_ns):
    """A Timestamp message of nanoseconds since the epoch."""
    stamp = Timestamp()
    stamp.FromNanoseconds(time_ns)
    return stamp


def _required(request, field):
    """Return request.<field>, a message that must be set."""
    if not request.HasField(field):
        raise InvalidArgument(f"{field}: got nothing, expected a {getattr(request, field).DESCRIPTOR.name}")
    return getattr(request, field)


def _per_message(handle, request, context):
    """(response, None) of one stream message, or (None, MessageError) when the unary call
    would have refused it; anything else (a bug) ends the stream."""
    try:
        return handle(request, context), None
    except DOMAIN_ERRORS as error:
        return None, pb.MessageError(code=status_code(error).value[0], message=str(error))


def describe(entry):
    """Return the Model message of a registry entry."""
    network = entry.network
    return pb.Model(id=entry.id, name=entry.name, spec=spec_to_proto(network.spec),
                    num_parameters=network.num_parameters, step=network.step,
                    version=network.version, create_time=timestamp(entry.create_time_ns),
                    update_time=timestamp(entry.update_time_ns))


class ModelServicer(pb_grpc.ModelServiceServicer):
    """The RPCs of nnserve.v1.ModelService on one Registry."""

    def __init__(self, registry, datasets, jobs):
        self._registry = registry
        self._datasets = datasets
        self._jobs = jobs

    def CreateModel(self, request, context):
        entry = self._registry.create(spec_from_proto(_required(request, "spec")), request.name,
                                      request.id)
        return pb.CreateModelResponse(model=describe(entry))

    def GetModel(self, request, context):
        return pb.GetModelResponse(model=describe(self._registry.get(request.model)))

    def ListModels(self, request, context):
        entries, token = self._registry.list(request.page_size, request.page_token)
        return pb.ListModelsResponse(models=[describe(e) for e in entries], next_page_token=token)

    def DeleteModel(self, request, context):
        return pb.DeleteModelResponse(model=describe(self._registry.delete(request.model)))

    def TrainStep(self, request, context):
        x, y = to_array(request.x, "x"), to_array(request.y, "y")
        loss = self._registry.train_step(request.model, x, y)
        return pb.TrainStepResponse(loss=loss, step=loss.step, version=loss.version)

    def Predict(self, request, context):
        x = to_array(request.x, "x")
        prediction = self._registry.predict(request.model, x)
        outputs = prediction.outputs
        return pb.PredictResponse(outputs=to_tensor(outputs, "outputs"), version=outputs.version,
                                  merged_rows=prediction.merged_rows,
                                  merged_offset=prediction.merged_offset)

    def Evaluate(self, request, context):
        x, y = to_array(request.x, "x"), to_array(request.y, "y")
        metrics = self._registry.evaluate(request.model, x, y)
        return pb.EvaluateResponse(loss=metrics["loss"], accuracy=metrics.get("accuracy"),
                                   version=metrics.version)

    def GetState(self, request, context):
        state = self._registry.get_state(request.model)
        return pb.GetStateResponse(state=state_to_proto(state), version=state["version"])

    def SetState(self, request, context):
        state = state_from_proto(_required(request, "state"))
        change = self._registry.set_state(request.model, state)
        return pb.SetStateResponse(step=change.step, version=change.version)

    def SetWeights(self, request, context):
        weights = layers_from_proto(request.weights, "weights")
        change = self._registry.set_weights(request.model, weights)
        return pb.SetWeightsResponse(step=change.step, version=change.version)

    # -- streams: each message handled as its unary call (proto: "Streams") ------------

    def TrainStream(self, requests, context):
        # Bulk training, like a job: a step computing alone may use --training-threads.
        try:
            for request in requests:
                if not context.is_active():  # cancelled: apply nothing more
                    return
                BUDGET.alone()
                step, error = _per_message(self.TrainStep, request, context)
                yield pb.TrainStreamResponse(step=step, error=error)
        finally:
            BUDGET.done()

    def PredictStream(self, requests, context):
        for request in requests:
            if not context.is_active():
                return
            prediction, error = _per_message(self.Predict, request, context)
            yield pb.PredictStreamResponse(prediction=prediction, error=error)

    # -- datasets -----------------------------------------------------------------------

    def UploadDataset(self, request_iterator, context):
        dataset = self._datasets.upload(request_iterator)
        return pb.UploadDatasetResponse(dataset=dataset.describe(timestamp))

    def GetDataset(self, request, context):
        return pb.GetDatasetResponse(dataset=self._datasets.get(request.dataset).describe(timestamp))

    def ListDatasets(self, request, context):
        datasets, token = self._datasets.list(request.page_size, request.page_token)
        return pb.ListDatasetsResponse(datasets=[d.describe(timestamp) for d in datasets],
                                       next_page_token=token)

    def DeleteDataset(self, request, context):
        dataset = self._datasets.delete(request.dataset)
        return pb.DeleteDatasetResponse(dataset=dataset.describe(timestamp))

    # -- training jobs ------------------------------------------------------------------

    def CreateTrainingJob(self, request, context):
        return pb.CreateTrainingJobResponse(job=self._jobs.create(request).describe(timestamp))

    def GetTrainingJob(self, request, context):
        return pb.GetTrainingJobResponse(job=self._jobs.get(request.job).describe(timestamp))

    def ListTrainingJobs(self, request, context):
        jobs, token = self._jobs.list(request.page_size, request.page_token, request.model)
        return pb.ListTrainingJobsResponse(jobs=[job.describe(timestamp) for job in jobs],
                                           next_page_token=token)

    def CancelTrainingJob(self, request, context):
        return pb.CancelTrainingJobResponse(job=self._jobs.cancel(request.job).describe(timestamp))

    def WatchTrainingJob(self, request, context):
        yield from self._jobs.watch(request.job, context.is_active)

    # -- interchange: ONNX, the one ModelFormat (format_from_proto refuses the others) ---

    def ExportModel(self, request, context):
        format_from_proto(request.format)
        exported = self._registry.export_onnx(request.model)
        return pb.ExportModelResponse(model_data=exported, format=request.format,
                                      step=exported.step, version=exported.version)

    def ImportModel(self, request, context):
        format_from_proto(request.format)
        options = options_from_proto(_required(request, "options"))
        entry = self._registry.import_onnx(request.model_data, options, request.name, request.id)
        return pb.ImportModelResponse(model=describe(entry))
