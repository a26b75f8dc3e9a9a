from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RolloutGuard(_message.Message):
    __slots__ = ("window_seconds", "for_seconds", "min_requests", "min_labelled_rows", "max_error_ratio_increase", "max_p99_ratio", "max_accuracy_drop", "max_disagreement")
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FOR_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MIN_LABELLED_ROWS_FIELD_NUMBER: _ClassVar[int]
    MAX_ERROR_RATIO_INCREASE_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_RATIO_FIELD_NUMBER: _ClassVar[int]
    MAX_ACCURACY_DROP_FIELD_NUMBER: _ClassVar[int]
    MAX_DISAGREEMENT_FIELD_NUMBER: _ClassVar[int]
    window_seconds: float
    for_seconds: float
    min_requests: int
    min_labelled_rows: int
    max_error_ratio_increase: float
    max_p99_ratio: float
    max_accuracy_drop: float
    max_disagreement: float
    def __init__(self, window_seconds: _Optional[float] = ..., for_seconds: _Optional[float] = ..., min_requests: _Optional[int] = ..., min_labelled_rows: _Optional[int] = ..., max_error_ratio_increase: _Optional[float] = ..., max_p99_ratio: _Optional[float] = ..., max_accuracy_drop: _Optional[float] = ..., max_disagreement: _Optional[float] = ...) -> None: ...

class RolloutPromotion(_message.Message):
    __slots__ = ("steps", "hold_seconds")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    HOLD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedScalarFieldContainer[float]
    hold_seconds: float
    def __init__(self, steps: _Optional[_Iterable[float]] = ..., hold_seconds: _Optional[float] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("weights", "stable_version", "shadow_version", "sticky_key", "guard", "promotion")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    STABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    STICKY_KEY_FIELD_NUMBER: _ClassVar[int]
    GUARD_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.ScalarMap[int, float]
    stable_version: int
    shadow_version: int
    sticky_key: str
    guard: RolloutGuard
    promotion: RolloutPromotion
    def __init__(self, weights: _Optional[_Mapping[int, float]] = ..., stable_version: _Optional[int] = ..., shadow_version: _Optional[int] = ..., sticky_key: _Optional[str] = ..., guard: _Optional[_Union[RolloutGuard, _Mapping]] = ..., promotion: _Optional[_Union[RolloutPromotion, _Mapping]] = ...) -> None: ...

class SetRolloutRequest(_message.Message):
    __slots__ = ("model_name", "rollout", "clear")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    CLEAR_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    rollout: Rollout
    clear: bool
    def __init__(self, model_name: _Optional[str] = ..., rollout: _Optional[_Union[Rollout, _Mapping]] = ..., clear: _Optional[bool] = ...) -> None: ...

class GetRolloutRequest(_message.Message):
    __slots__ = ("model_name",)
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    def __init__(self, model_name: _Optional[str] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("model_name", "rollout", "phase", "reason", "changed_unix_nanos", "step")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHANGED_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    rollout: Rollout
    phase: str
    reason: str
    changed_unix_nanos: int
    step: int
    def __init__(self, model_name: _Optional[str] = ..., rollout: _Optional[_Union[Rollout, _Mapping]] = ..., phase: _Optional[str] = ..., reason: _Optional[str] = ..., changed_unix_nanos: _Optional[int] = ..., step: _Optional[int] = ...) -> None: ...
