from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class TelemetryRequest(_message.Message):
    __slots__ = ("interval_ms", "models", "sections")
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SECTIONS_FIELD_NUMBER: _ClassVar[int]
    interval_ms: int
    models: _containers.RepeatedScalarFieldContainer[str]
    sections: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, interval_ms: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., sections: _Optional[_Iterable[str]] = ...) -> None: ...

class TelemetryFrame(_message.Message):
    __slots__ = ("timestamp_unix_nanos", "interval_ms")
    TIMESTAMP_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    timestamp_unix_nanos: int
    interval_ms: int
    def __init__(self, timestamp_unix_nanos: _Optional[int] = ..., interval_ms: _Optional[int] = ...) -> None: ...
