import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    DATA_TYPE_FLOAT32: _ClassVar[DataType]
    DATA_TYPE_FLOAT64: _ClassVar[DataType]
    DATA_TYPE_INT32: _ClassVar[DataType]
    DATA_TYPE_INT64: _ClassVar[DataType]

class Activation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTIVATION_UNSPECIFIED: _ClassVar[Activation]
    ACTIVATION_IDENTITY: _ClassVar[Activation]
    ACTIVATION_SIGMOID: _ClassVar[Activation]
    ACTIVATION_TANH: _ClassVar[Activation]
    ACTIVATION_RELU: _ClassVar[Activation]
    ACTIVATION_LEAKY_RELU: _ClassVar[Activation]
    ACTIVATION_SOFTMAX: _ClassVar[Activation]

class Loss(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOSS_UNSPECIFIED: _ClassVar[Loss]
    LOSS_MSE: _ClassVar[Loss]
    LOSS_BINARY_CROSS_ENTROPY: _ClassVar[Loss]
    LOSS_CROSS_ENTROPY: _ClassVar[Loss]

class Optimizer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPTIMIZER_UNSPECIFIED: _ClassVar[Optimizer]
    OPTIMIZER_SGD: _ClassVar[Optimizer]
    OPTIMIZER_ADAM: _ClassVar[Optimizer]

class Init(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INIT_UNSPECIFIED: _ClassVar[Init]
    INIT_HE: _ClassVar[Init]
    INIT_XAVIER: _ClassVar[Init]

class TrainingJobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINING_JOB_STATE_UNSPECIFIED: _ClassVar[TrainingJobState]
    TRAINING_JOB_STATE_QUEUED: _ClassVar[TrainingJobState]
    TRAINING_JOB_STATE_RUNNING: _ClassVar[TrainingJobState]
    TRAINING_JOB_STATE_SUCCEEDED: _ClassVar[TrainingJobState]
    TRAINING_JOB_STATE_FAILED: _ClassVar[TrainingJobState]
    TRAINING_JOB_STATE_CANCELLED: _ClassVar[TrainingJobState]

class TrainingJobEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINING_JOB_EVENT_KIND_UNSPECIFIED: _ClassVar[TrainingJobEventKind]
    TRAINING_JOB_EVENT_KIND_CURRENT: _ClassVar[TrainingJobEventKind]
    TRAINING_JOB_EVENT_KIND_STARTED: _ClassVar[TrainingJobEventKind]
    TRAINING_JOB_EVENT_KIND_PROGRESS: _ClassVar[TrainingJobEventKind]
    TRAINING_JOB_EVENT_KIND_EPOCH_END: _ClassVar[TrainingJobEventKind]
    TRAINING_JOB_EVENT_KIND_ENDED: _ClassVar[TrainingJobEventKind]

class ModelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_FORMAT_UNSPECIFIED: _ClassVar[ModelFormat]
    MODEL_FORMAT_ONNX: _ClassVar[ModelFormat]
DATA_TYPE_UNSPECIFIED: DataType
DATA_TYPE_FLOAT32: DataType
DATA_TYPE_FLOAT64: DataType
DATA_TYPE_INT32: DataType
DATA_TYPE_INT64: DataType
ACTIVATION_UNSPECIFIED: Activation
ACTIVATION_IDENTITY: Activation
ACTIVATION_SIGMOID: Activation
ACTIVATION_TANH: Activation
ACTIVATION_RELU: Activation
ACTIVATION_LEAKY_RELU: Activation
ACTIVATION_SOFTMAX: Activation
LOSS_UNSPECIFIED: Loss
LOSS_MSE: Loss
LOSS_BINARY_CROSS_ENTROPY: Loss
LOSS_CROSS_ENTROPY: Loss
OPTIMIZER_UNSPECIFIED: Optimizer
OPTIMIZER_SGD: Optimizer
OPTIMIZER_ADAM: Optimizer
INIT_UNSPECIFIED: Init
INIT_HE: Init
INIT_XAVIER: Init
TRAINING_JOB_STATE_UNSPECIFIED: TrainingJobState
TRAINING_JOB_STATE_QUEUED: TrainingJobState
TRAINING_JOB_STATE_RUNNING: TrainingJobState
TRAINING_JOB_STATE_SUCCEEDED: TrainingJobState
TRAINING_JOB_STATE_FAILED: TrainingJobState
TRAINING_JOB_STATE_CANCELLED: TrainingJobState
TRAINING_JOB_EVENT_KIND_UNSPECIFIED: TrainingJobEventKind
TRAINING_JOB_EVENT_KIND_CURRENT: TrainingJobEventKind
TRAINING_JOB_EVENT_KIND_STARTED: TrainingJobEventKind
TRAINING_JOB_EVENT_KIND_PROGRESS: TrainingJobEventKind
TRAINING_JOB_EVENT_KIND_EPOCH_END: TrainingJobEventKind
TRAINING_JOB_EVENT_KIND_ENDED: TrainingJobEventKind
MODEL_FORMAT_UNSPECIFIED: ModelFormat
MODEL_FORMAT_ONNX: ModelFormat

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "content")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    dtype: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    content: bytes
    def __init__(self, dtype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., content: _Optional[bytes] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("layers", "activations", "loss", "optimizer", "learning_rate", "momentum", "nesterov", "weight_decay", "betas", "eps", "init", "seed", "dtype", "l1")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    NESTEROV_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    BETAS_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    INIT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    L1_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedScalarFieldContainer[int]
    activations: _containers.RepeatedScalarFieldContainer[Activation]
    loss: Loss
    optimizer: Optimizer
    learning_rate: float
    momentum: float
    nesterov: bool
    weight_decay: float
    betas: _containers.RepeatedScalarFieldContainer[float]
    eps: float
    init: Init
    seed: int
    dtype: DataType
    l1: float
    def __init__(self, layers: _Optional[_Iterable[int]] = ..., activations: _Optional[_Iterable[_Union[Activation, str]]] = ..., loss: _Optional[_Union[Loss, str]] = ..., optimizer: _Optional[_Union[Optimizer, str]] = ..., learning_rate: _Optional[float] = ..., momentum: _Optional[float] = ..., nesterov: _Optional[bool] = ..., weight_decay: _Optional[float] = ..., betas: _Optional[_Iterable[float]] = ..., eps: _Optional[float] = ..., init: _Optional[_Union[Init, str]] = ..., seed: _Optional[int] = ..., dtype: _Optional[_Union[DataType, str]] = ..., l1: _Optional[float] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "name", "spec", "num_parameters", "step", "version", "create_time", "update_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    spec: ModelSpec
    num_parameters: int
    step: int
    version: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., spec: _Optional[_Union[ModelSpec, _Mapping]] = ..., num_parameters: _Optional[int] = ..., step: _Optional[int] = ..., version: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LayerParameters(_message.Message):
    __slots__ = ("weights", "biases")
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    BIASES_FIELD_NUMBER: _ClassVar[int]
    weights: Tensor
    biases: Tensor
    def __init__(self, weights: _Optional[_Union[Tensor, _Mapping]] = ..., biases: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class OptimizerSlot(_message.Message):
    __slots__ = ("name", "layers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    layers: _containers.RepeatedCompositeFieldContainer[LayerParameters]
    def __init__(self, name: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[LayerParameters, _Mapping]]] = ...) -> None: ...

class ModelState(_message.Message):
    __slots__ = ("spec", "step", "weights", "slots")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    spec: ModelSpec
    step: int
    weights: _containers.RepeatedCompositeFieldContainer[LayerParameters]
    slots: _containers.RepeatedCompositeFieldContainer[OptimizerSlot]
    def __init__(self, spec: _Optional[_Union[ModelSpec, _Mapping]] = ..., step: _Optional[int] = ..., weights: _Optional[_Iterable[_Union[LayerParameters, _Mapping]]] = ..., slots: _Optional[_Iterable[_Union[OptimizerSlot, _Mapping]]] = ...) -> None: ...

class CreateModelRequest(_message.Message):
    __slots__ = ("spec", "name", "id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    spec: ModelSpec
    name: str
    id: str
    def __init__(self, spec: _Optional[_Union[ModelSpec, _Mapping]] = ..., name: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class CreateModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class TrainStepRequest(_message.Message):
    __slots__ = ("model", "x", "y")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    model: str
    x: Tensor
    y: Tensor
    def __init__(self, model: _Optional[str] = ..., x: _Optional[_Union[Tensor, _Mapping]] = ..., y: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class TrainStepResponse(_message.Message):
    __slots__ = ("loss", "step", "version")
    LOSS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    loss: float
    step: int
    version: int
    def __init__(self, loss: _Optional[float] = ..., step: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "x")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    model: str
    x: Tensor
    def __init__(self, model: _Optional[str] = ..., x: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("outputs", "version", "merged_rows", "merged_offset")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MERGED_ROWS_FIELD_NUMBER: _ClassVar[int]
    MERGED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    outputs: Tensor
    version: int
    merged_rows: int
    merged_offset: int
    def __init__(self, outputs: _Optional[_Union[Tensor, _Mapping]] = ..., version: _Optional[int] = ..., merged_rows: _Optional[int] = ..., merged_offset: _Optional[int] = ...) -> None: ...

class MessageError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class TrainStreamResponse(_message.Message):
    __slots__ = ("step", "error")
    STEP_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    step: TrainStepResponse
    error: MessageError
    def __init__(self, step: _Optional[_Union[TrainStepResponse, _Mapping]] = ..., error: _Optional[_Union[MessageError, _Mapping]] = ...) -> None: ...

class PredictStreamResponse(_message.Message):
    __slots__ = ("prediction", "error")
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    prediction: PredictResponse
    error: MessageError
    def __init__(self, prediction: _Optional[_Union[PredictResponse, _Mapping]] = ..., error: _Optional[_Union[MessageError, _Mapping]] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("model", "x", "y")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    model: str
    x: Tensor
    y: Tensor
    def __init__(self, model: _Optional[str] = ..., x: _Optional[_Union[Tensor, _Mapping]] = ..., y: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("loss", "accuracy", "version")
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    loss: float
    accuracy: float
    version: int
    def __init__(self, loss: _Optional[float] = ..., accuracy: _Optional[float] = ..., version: _Optional[int] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetStateResponse(_message.Message):
    __slots__ = ("state", "version")
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    state: ModelState
    version: int
    def __init__(self, state: _Optional[_Union[ModelState, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class SetStateRequest(_message.Message):
    __slots__ = ("model", "state")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    model: str
    state: ModelState
    def __init__(self, model: _Optional[str] = ..., state: _Optional[_Union[ModelState, _Mapping]] = ...) -> None: ...

class SetStateResponse(_message.Message):
    __slots__ = ("step", "version")
    STEP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    step: int
    version: int
    def __init__(self, step: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class SetWeightsRequest(_message.Message):
    __slots__ = ("model", "weights")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    weights: _containers.RepeatedCompositeFieldContainer[LayerParameters]
    def __init__(self, model: _Optional[str] = ..., weights: _Optional[_Iterable[_Union[LayerParameters, _Mapping]]] = ...) -> None: ...

class SetWeightsResponse(_message.Message):
    __slots__ = ("step", "version")
    STEP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    step: int
    version: int
    def __init__(self, step: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("id", "name", "rows", "x_shape", "y_shape", "x_dtype", "y_dtype", "bytes", "sha256", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    X_SHAPE_FIELD_NUMBER: _ClassVar[int]
    Y_SHAPE_FIELD_NUMBER: _ClassVar[int]
    X_DTYPE_FIELD_NUMBER: _ClassVar[int]
    Y_DTYPE_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    rows: int
    x_shape: _containers.RepeatedScalarFieldContainer[int]
    y_shape: _containers.RepeatedScalarFieldContainer[int]
    x_dtype: DataType
    y_dtype: DataType
    bytes: int
    sha256: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., rows: _Optional[int] = ..., x_shape: _Optional[_Iterable[int]] = ..., y_shape: _Optional[_Iterable[int]] = ..., x_dtype: _Optional[_Union[DataType, str]] = ..., y_dtype: _Optional[_Union[DataType, str]] = ..., bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DatasetHeader(_message.Message):
    __slots__ = ("name", "rows", "x_dtype", "x_width", "y_dtype", "y_width")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    X_DTYPE_FIELD_NUMBER: _ClassVar[int]
    X_WIDTH_FIELD_NUMBER: _ClassVar[int]
    Y_DTYPE_FIELD_NUMBER: _ClassVar[int]
    Y_WIDTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    rows: int
    x_dtype: DataType
    x_width: int
    y_dtype: DataType
    y_width: int
    def __init__(self, name: _Optional[str] = ..., rows: _Optional[int] = ..., x_dtype: _Optional[_Union[DataType, str]] = ..., x_width: _Optional[int] = ..., y_dtype: _Optional[_Union[DataType, str]] = ..., y_width: _Optional[int] = ...) -> None: ...

class DatasetChunk(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: Tensor
    y: Tensor
    def __init__(self, x: _Optional[_Union[Tensor, _Mapping]] = ..., y: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class UploadDatasetRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: DatasetHeader
    chunk: DatasetChunk
    def __init__(self, header: _Optional[_Union[DatasetHeader, _Mapping]] = ..., chunk: _Optional[_Union[DatasetChunk, _Mapping]] = ...) -> None: ...

class UploadDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    def __init__(self, dataset: _Optional[str] = ...) -> None: ...

class GetDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets", "next_page_token")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    next_page_token: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteDatasetRequest(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    def __init__(self, dataset: _Optional[str] = ...) -> None: ...

class DeleteDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...

class EpochMetrics(_message.Message):
    __slots__ = ("loss", "val_loss", "val_accuracy")
    LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    loss: float
    val_loss: float
    val_accuracy: float
    def __init__(self, loss: _Optional[float] = ..., val_loss: _Optional[float] = ..., val_accuracy: _Optional[float] = ...) -> None: ...

class TrainingJob(_message.Message):
    __slots__ = ("id", "model", "dataset", "validation_dataset", "state", "epochs", "batch_size", "shuffle", "seed", "epoch", "step", "total_steps", "examples_per_second", "history", "error", "create_time", "start_time", "end_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_DATASET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    dataset: str
    validation_dataset: str
    state: TrainingJobState
    epochs: int
    batch_size: int
    shuffle: bool
    seed: int
    epoch: int
    step: int
    total_steps: int
    examples_per_second: float
    history: _containers.RepeatedCompositeFieldContainer[EpochMetrics]
    error: str
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., dataset: _Optional[str] = ..., validation_dataset: _Optional[str] = ..., state: _Optional[_Union[TrainingJobState, str]] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., shuffle: _Optional[bool] = ..., seed: _Optional[int] = ..., epoch: _Optional[int] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., examples_per_second: _Optional[float] = ..., history: _Optional[_Iterable[_Union[EpochMetrics, _Mapping]]] = ..., error: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateTrainingJobRequest(_message.Message):
    __slots__ = ("model", "dataset", "epochs", "batch_size", "shuffle", "seed", "validation_dataset", "progress_every_steps", "progress_every_seconds")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_DATASET_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_EVERY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    dataset: str
    epochs: int
    batch_size: int
    shuffle: bool
    seed: int
    validation_dataset: str
    progress_every_steps: int
    progress_every_seconds: float
    def __init__(self, model: _Optional[str] = ..., dataset: _Optional[str] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., shuffle: _Optional[bool] = ..., seed: _Optional[int] = ..., validation_dataset: _Optional[str] = ..., progress_every_steps: _Optional[int] = ..., progress_every_seconds: _Optional[float] = ...) -> None: ...

class CreateTrainingJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: TrainingJob
    def __init__(self, job: _Optional[_Union[TrainingJob, _Mapping]] = ...) -> None: ...

class GetTrainingJobRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: str
    def __init__(self, job: _Optional[str] = ...) -> None: ...

class GetTrainingJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: TrainingJob
    def __init__(self, job: _Optional[_Union[TrainingJob, _Mapping]] = ...) -> None: ...

class ListTrainingJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "model")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    model: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class ListTrainingJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[TrainingJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[TrainingJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelTrainingJobRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: str
    def __init__(self, job: _Optional[str] = ...) -> None: ...

class CancelTrainingJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: TrainingJob
    def __init__(self, job: _Optional[_Union[TrainingJob, _Mapping]] = ...) -> None: ...

class WatchTrainingJobRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: str
    def __init__(self, job: _Optional[str] = ...) -> None: ...

class TrainingJobEvent(_message.Message):
    __slots__ = ("kind", "job", "recent_loss", "version")
    KIND_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    RECENT_LOSS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    kind: TrainingJobEventKind
    job: TrainingJob
    recent_loss: float
    version: int
    def __init__(self, kind: _Optional[_Union[TrainingJobEventKind, str]] = ..., job: _Optional[_Union[TrainingJob, _Mapping]] = ..., recent_loss: _Optional[float] = ..., version: _Optional[int] = ...) -> None: ...

class TrainingOptions(_message.Message):
    __slots__ = ("loss", "optimizer", "learning_rate", "momentum", "nesterov", "weight_decay", "betas", "eps")
    LOSS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    NESTEROV_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    BETAS_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    loss: Loss
    optimizer: Optimizer
    learning_rate: float
    momentum: float
    nesterov: bool
    weight_decay: float
    betas: _containers.RepeatedScalarFieldContainer[float]
    eps: float
    def __init__(self, loss: _Optional[_Union[Loss, str]] = ..., optimizer: _Optional[_Union[Optimizer, str]] = ..., learning_rate: _Optional[float] = ..., momentum: _Optional[float] = ..., nesterov: _Optional[bool] = ..., weight_decay: _Optional[float] = ..., betas: _Optional[_Iterable[float]] = ..., eps: _Optional[float] = ...) -> None: ...

class ExportModelRequest(_message.Message):
    __slots__ = ("model", "format")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    model: str
    format: ModelFormat
    def __init__(self, model: _Optional[str] = ..., format: _Optional[_Union[ModelFormat, str]] = ...) -> None: ...

class ExportModelResponse(_message.Message):
    __slots__ = ("model_data", "format", "step", "version")
    MODEL_DATA_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_data: bytes
    format: ModelFormat
    step: int
    version: int
    def __init__(self, model_data: _Optional[bytes] = ..., format: _Optional[_Union[ModelFormat, str]] = ..., step: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class ImportModelRequest(_message.Message):
    __slots__ = ("name", "format", "model_data", "options", "id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MODEL_DATA_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    format: ModelFormat
    model_data: bytes
    options: TrainingOptions
    id: str
    def __init__(self, name: _Optional[str] = ..., format: _Optional[_Union[ModelFormat, str]] = ..., model_data: _Optional[bytes] = ..., options: _Optional[_Union[TrainingOptions, _Mapping]] = ..., id: _Optional[str] = ...) -> None: ...

class ImportModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...
