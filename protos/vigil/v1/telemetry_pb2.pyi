from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TelemetryRequest(_message.Message):
    __slots__ = ("interval_ms", "models", "sections", "member")
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SECTIONS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    interval_ms: int
    models: _containers.RepeatedScalarFieldContainer[str]
    sections: _containers.RepeatedScalarFieldContainer[str]
    member: str
    def __init__(self, interval_ms: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., sections: _Optional[_Iterable[str]] = ..., member: _Optional[str] = ...) -> None: ...

class TelemetryFrame(_message.Message):
    __slots__ = ("timestamp_unix_nanos", "interval_ms", "uptime_seconds", "models", "server", "alerts", "sequence", "dropped_frames", "events", "rollouts", "members", "member")
    TIMESTAMP_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    timestamp_unix_nanos: int
    interval_ms: int
    uptime_seconds: float
    models: _containers.RepeatedCompositeFieldContainer[ModelTelemetry]
    server: ServerTelemetry
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    sequence: int
    dropped_frames: int
    events: _containers.RepeatedCompositeFieldContainer[TelemetryEvent]
    rollouts: _containers.RepeatedCompositeFieldContainer[RolloutTelemetry]
    members: _containers.RepeatedCompositeFieldContainer[FleetMember]
    member: str
    def __init__(self, timestamp_unix_nanos: _Optional[int] = ..., interval_ms: _Optional[int] = ..., uptime_seconds: _Optional[float] = ..., models: _Optional[_Iterable[_Union[ModelTelemetry, _Mapping]]] = ..., server: _Optional[_Union[ServerTelemetry, _Mapping]] = ..., alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ..., sequence: _Optional[int] = ..., dropped_frames: _Optional[int] = ..., events: _Optional[_Iterable[_Union[TelemetryEvent, _Mapping]]] = ..., rollouts: _Optional[_Iterable[_Union[RolloutTelemetry, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[FleetMember, _Mapping]]] = ..., member: _Optional[str] = ...) -> None: ...

class FleetMember(_message.Message):
    __slots__ = ("id", "host", "pid", "worker", "state", "started_unix", "seen_unix", "leader", "local")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    SEEN_UNIX_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    id: str
    host: str
    pid: int
    worker: int
    state: str
    started_unix: float
    seen_unix: float
    leader: bool
    local: bool
    def __init__(self, id: _Optional[str] = ..., host: _Optional[str] = ..., pid: _Optional[int] = ..., worker: _Optional[int] = ..., state: _Optional[str] = ..., started_unix: _Optional[float] = ..., seen_unix: _Optional[float] = ..., leader: _Optional[bool] = ..., local: _Optional[bool] = ...) -> None: ...

class RolloutTelemetry(_message.Message):
    __slots__ = ("model", "phase", "stable", "window_seconds", "versions", "reason", "step")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    model: str
    phase: str
    stable: str
    window_seconds: float
    versions: _containers.RepeatedCompositeFieldContainer[VersionComparison]
    reason: str
    step: int
    def __init__(self, model: _Optional[str] = ..., phase: _Optional[str] = ..., stable: _Optional[str] = ..., window_seconds: _Optional[float] = ..., versions: _Optional[_Iterable[_Union[VersionComparison, _Mapping]]] = ..., reason: _Optional[str] = ..., step: _Optional[int] = ...) -> None: ...

class VersionComparison(_message.Message):
    __slots__ = ("version", "role", "weight", "requests", "errors", "error_ratio", "p50_ms", "p99_ms", "predictions", "mean_confidence", "drift_status", "drift_score", "accuracy", "labelled_rows", "agreement", "compared_rows", "breaches")
    class PredictionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATIO_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    MEAN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    DRIFT_STATUS_FIELD_NUMBER: _ClassVar[int]
    DRIFT_SCORE_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LABELLED_ROWS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    COMPARED_ROWS_FIELD_NUMBER: _ClassVar[int]
    BREACHES_FIELD_NUMBER: _ClassVar[int]
    version: str
    role: str
    weight: float
    requests: int
    errors: int
    error_ratio: float
    p50_ms: float
    p99_ms: float
    predictions: _containers.ScalarMap[str, int]
    mean_confidence: float
    drift_status: str
    drift_score: float
    accuracy: float
    labelled_rows: int
    agreement: float
    compared_rows: int
    breaches: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[str] = ..., role: _Optional[str] = ..., weight: _Optional[float] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., error_ratio: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., predictions: _Optional[_Mapping[str, int]] = ..., mean_confidence: _Optional[float] = ..., drift_status: _Optional[str] = ..., drift_score: _Optional[float] = ..., accuracy: _Optional[float] = ..., labelled_rows: _Optional[int] = ..., agreement: _Optional[float] = ..., compared_rows: _Optional[int] = ..., breaches: _Optional[_Iterable[str]] = ...) -> None: ...

class LatencySummary(_message.Message):
    __slots__ = ("count", "mean_ms", "p50_ms", "p90_ms", "p99_ms")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_MS_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P90_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    def __init__(self, count: _Optional[int] = ..., mean_ms: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p90_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ...) -> None: ...

class Distribution(_message.Message):
    __slots__ = ("bounds", "counts", "mean")
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    bounds: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    mean: float
    def __init__(self, bounds: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ..., mean: _Optional[float] = ...) -> None: ...

class ModelTelemetry(_message.Message):
    __slots__ = ("model", "version", "state", "requests", "requests_total", "errors", "errors_total", "rows", "rows_total", "requests_per_second", "rows_per_second", "requests_per_second_since_start", "request_latency", "queue_latency", "inference_latency", "batch_size", "queue_depth", "running", "is_default", "quality")
    class ErrorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ErrorsTotalEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ROWS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_SECOND_SINCE_START_FIELD_NUMBER: _ClassVar[int]
    REQUEST_LATENCY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LATENCY_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_LATENCY_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    state: str
    requests: int
    requests_total: int
    errors: _containers.ScalarMap[str, int]
    errors_total: _containers.ScalarMap[str, int]
    rows: int
    rows_total: int
    requests_per_second: float
    rows_per_second: float
    requests_per_second_since_start: float
    request_latency: LatencySummary
    queue_latency: LatencySummary
    inference_latency: LatencySummary
    batch_size: Distribution
    queue_depth: int
    running: int
    is_default: bool
    quality: QualityTelemetry
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[str] = ..., requests: _Optional[int] = ..., requests_total: _Optional[int] = ..., errors: _Optional[_Mapping[str, int]] = ..., errors_total: _Optional[_Mapping[str, int]] = ..., rows: _Optional[int] = ..., rows_total: _Optional[int] = ..., requests_per_second: _Optional[float] = ..., rows_per_second: _Optional[float] = ..., requests_per_second_since_start: _Optional[float] = ..., request_latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., queue_latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., inference_latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., batch_size: _Optional[_Union[Distribution, _Mapping]] = ..., queue_depth: _Optional[int] = ..., running: _Optional[int] = ..., is_default: _Optional[bool] = ..., quality: _Optional[_Union[QualityTelemetry, _Mapping]] = ...) -> None: ...

class QualityTelemetry(_message.Message):
    __slots__ = ("predictions", "predictions_total", "confidence", "margin", "feedback_total", "recent", "timed", "confusion", "expected_accuracy", "expected_accuracy_rows", "drift", "windows", "days", "reliability")
    class PredictionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class PredictionsTotalEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    TIMED_FIELD_NUMBER: _ClassVar[int]
    CONFUSION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ACCURACY_ROWS_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    RELIABILITY_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.ScalarMap[str, int]
    predictions_total: _containers.ScalarMap[str, int]
    confidence: Distribution
    margin: Distribution
    feedback_total: int
    recent: AccuracyWindow
    timed: AccuracyWindow
    confusion: ConfusionMatrix
    expected_accuracy: float
    expected_accuracy_rows: int
    drift: DriftTelemetry
    windows: _containers.RepeatedCompositeFieldContainer[PredictionWindow]
    days: _containers.RepeatedCompositeFieldContainer[PredictionWindow]
    reliability: _containers.RepeatedCompositeFieldContainer[ReliabilityBin]
    def __init__(self, predictions: _Optional[_Mapping[str, int]] = ..., predictions_total: _Optional[_Mapping[str, int]] = ..., confidence: _Optional[_Union[Distribution, _Mapping]] = ..., margin: _Optional[_Union[Distribution, _Mapping]] = ..., feedback_total: _Optional[int] = ..., recent: _Optional[_Union[AccuracyWindow, _Mapping]] = ..., timed: _Optional[_Union[AccuracyWindow, _Mapping]] = ..., confusion: _Optional[_Union[ConfusionMatrix, _Mapping]] = ..., expected_accuracy: _Optional[float] = ..., expected_accuracy_rows: _Optional[int] = ..., drift: _Optional[_Union[DriftTelemetry, _Mapping]] = ..., windows: _Optional[_Iterable[_Union[PredictionWindow, _Mapping]]] = ..., days: _Optional[_Iterable[_Union[PredictionWindow, _Mapping]]] = ..., reliability: _Optional[_Iterable[_Union[ReliabilityBin, _Mapping]]] = ...) -> None: ...

class PredictionWindow(_message.Message):
    __slots__ = ("name", "start_unix", "seconds", "predictions", "accuracy", "confusion", "coverage", "expected_accuracy_labelled", "expected_accuracy", "label_delay_p50_seconds", "label_delay_p90_seconds", "label_delay_p99_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    CONFUSION_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ACCURACY_LABELLED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LABEL_DELAY_P50_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LABEL_DELAY_P90_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LABEL_DELAY_P99_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    start_unix: float
    seconds: float
    predictions: int
    accuracy: AccuracyWindow
    confusion: ConfusionMatrix
    coverage: float
    expected_accuracy_labelled: float
    expected_accuracy: float
    label_delay_p50_seconds: float
    label_delay_p90_seconds: float
    label_delay_p99_seconds: float
    def __init__(self, name: _Optional[str] = ..., start_unix: _Optional[float] = ..., seconds: _Optional[float] = ..., predictions: _Optional[int] = ..., accuracy: _Optional[_Union[AccuracyWindow, _Mapping]] = ..., confusion: _Optional[_Union[ConfusionMatrix, _Mapping]] = ..., coverage: _Optional[float] = ..., expected_accuracy_labelled: _Optional[float] = ..., expected_accuracy: _Optional[float] = ..., label_delay_p50_seconds: _Optional[float] = ..., label_delay_p90_seconds: _Optional[float] = ..., label_delay_p99_seconds: _Optional[float] = ...) -> None: ...

class ReliabilityBin(_message.Message):
    __slots__ = ("lower", "upper", "rows", "mean_confidence", "accuracy")
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    MEAN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    lower: float
    upper: float
    rows: int
    mean_confidence: float
    accuracy: float
    def __init__(self, lower: _Optional[float] = ..., upper: _Optional[float] = ..., rows: _Optional[int] = ..., mean_confidence: _Optional[float] = ..., accuracy: _Optional[float] = ...) -> None: ...

class AccuracyWindow(_message.Message):
    __slots__ = ("rows", "accuracy", "classes", "size")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    rows: int
    accuracy: float
    classes: _containers.RepeatedCompositeFieldContainer[ClassMetrics]
    size: float
    def __init__(self, rows: _Optional[int] = ..., accuracy: _Optional[float] = ..., classes: _Optional[_Iterable[_Union[ClassMetrics, _Mapping]]] = ..., size: _Optional[float] = ...) -> None: ...

class ClassMetrics(_message.Message):
    __slots__ = ("label", "precision", "recall", "f1", "support")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    F1_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    label: str
    precision: float
    recall: float
    f1: float
    support: int
    def __init__(self, label: _Optional[str] = ..., precision: _Optional[float] = ..., recall: _Optional[float] = ..., f1: _Optional[float] = ..., support: _Optional[int] = ...) -> None: ...

class ConfusionMatrix(_message.Message):
    __slots__ = ("labels", "counts")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, labels: _Optional[_Iterable[str]] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class DriftTelemetry(_message.Message):
    __slots__ = ("has_reference", "computed_unix_nanos", "window_rows", "status", "features", "chi2_statistic", "chi2_pvalue", "chi2_status")
    HAS_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CHI2_STATISTIC_FIELD_NUMBER: _ClassVar[int]
    CHI2_PVALUE_FIELD_NUMBER: _ClassVar[int]
    CHI2_STATUS_FIELD_NUMBER: _ClassVar[int]
    has_reference: bool
    computed_unix_nanos: int
    window_rows: int
    status: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    chi2_statistic: float
    chi2_pvalue: float
    chi2_status: str
    def __init__(self, has_reference: _Optional[bool] = ..., computed_unix_nanos: _Optional[int] = ..., window_rows: _Optional[int] = ..., status: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ..., chi2_statistic: _Optional[float] = ..., chi2_pvalue: _Optional[float] = ..., chi2_status: _Optional[str] = ...) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("feature", "psi", "psi_status", "ks_statistic", "ks_pvalue", "ks_status")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    PSI_STATUS_FIELD_NUMBER: _ClassVar[int]
    KS_STATISTIC_FIELD_NUMBER: _ClassVar[int]
    KS_PVALUE_FIELD_NUMBER: _ClassVar[int]
    KS_STATUS_FIELD_NUMBER: _ClassVar[int]
    feature: str
    psi: float
    psi_status: str
    ks_statistic: float
    ks_pvalue: float
    ks_status: str
    def __init__(self, feature: _Optional[str] = ..., psi: _Optional[float] = ..., psi_status: _Optional[str] = ..., ks_statistic: _Optional[float] = ..., ks_pvalue: _Optional[float] = ..., ks_status: _Optional[str] = ...) -> None: ...

class ServerTelemetry(_message.Message):
    __slots__ = ("state", "cpu_percent", "memory_bytes", "in_flight", "subscribers", "unattributed_errors_total", "gpus")
    class UnattributedErrorsTotalEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    STATE_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    UNATTRIBUTED_ERRORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    state: str
    cpu_percent: float
    memory_bytes: int
    in_flight: int
    subscribers: int
    unattributed_errors_total: _containers.ScalarMap[str, int]
    gpus: _containers.RepeatedCompositeFieldContainer[GpuTelemetry]
    def __init__(self, state: _Optional[str] = ..., cpu_percent: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., in_flight: _Optional[int] = ..., subscribers: _Optional[int] = ..., unattributed_errors_total: _Optional[_Mapping[str, int]] = ..., gpus: _Optional[_Iterable[_Union[GpuTelemetry, _Mapping]]] = ...) -> None: ...

class GpuTelemetry(_message.Message):
    __slots__ = ("index", "name", "utilization", "memory_used_bytes", "memory_total_bytes", "power_watts")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    POWER_WATTS_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    utilization: float
    memory_used_bytes: int
    memory_total_bytes: int
    power_watts: float
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., utilization: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., power_watts: _Optional[float] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("name", "severity", "model", "version", "summary", "since_unix_nanos", "value", "signal", "value_text")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    VALUE_TEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    severity: str
    model: str
    version: str
    summary: str
    since_unix_nanos: int
    value: float
    signal: str
    value_text: str
    def __init__(self, name: _Optional[str] = ..., severity: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., summary: _Optional[str] = ..., since_unix_nanos: _Optional[int] = ..., value: _Optional[float] = ..., signal: _Optional[str] = ..., value_text: _Optional[str] = ...) -> None: ...

class TelemetryEvent(_message.Message):
    __slots__ = ("kind", "timestamp_unix_nanos", "sequence", "model", "version", "message", "member")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[TelemetryEvent.Kind]
        MODEL_LOADED: _ClassVar[TelemetryEvent.Kind]
        MODEL_FAILED: _ClassVar[TelemetryEvent.Kind]
        MODEL_UNLOADED: _ClassVar[TelemetryEvent.Kind]
        DEFAULT_VERSION_CHANGED: _ClassVar[TelemetryEvent.Kind]
        ALERT_FIRED: _ClassVar[TelemetryEvent.Kind]
        ALERT_RESOLVED: _ClassVar[TelemetryEvent.Kind]
        SERVER_DRAINING: _ClassVar[TelemetryEvent.Kind]
        ROLLOUT_CHANGED: _ClassVar[TelemetryEvent.Kind]
        ROLLOUT_ROLLED_BACK: _ClassVar[TelemetryEvent.Kind]
        ROLLOUT_PROMOTED: _ClassVar[TelemetryEvent.Kind]
        WORKER_RESTARTED: _ClassVar[TelemetryEvent.Kind]
    KIND_UNSPECIFIED: TelemetryEvent.Kind
    MODEL_LOADED: TelemetryEvent.Kind
    MODEL_FAILED: TelemetryEvent.Kind
    MODEL_UNLOADED: TelemetryEvent.Kind
    DEFAULT_VERSION_CHANGED: TelemetryEvent.Kind
    ALERT_FIRED: TelemetryEvent.Kind
    ALERT_RESOLVED: TelemetryEvent.Kind
    SERVER_DRAINING: TelemetryEvent.Kind
    ROLLOUT_CHANGED: TelemetryEvent.Kind
    ROLLOUT_ROLLED_BACK: TelemetryEvent.Kind
    ROLLOUT_PROMOTED: TelemetryEvent.Kind
    WORKER_RESTARTED: TelemetryEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    kind: TelemetryEvent.Kind
    timestamp_unix_nanos: int
    sequence: int
    model: str
    version: str
    message: str
    member: str
    def __init__(self, kind: _Optional[_Union[TelemetryEvent.Kind, str]] = ..., timestamp_unix_nanos: _Optional[int] = ..., sequence: _Optional[int] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., message: _Optional[str] = ..., member: _Optional[str] = ...) -> None: ...
