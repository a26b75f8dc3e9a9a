"""Per-model configuration: the `config.toml` file beside a model's version folders."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vigil.server.models.rollout_config import RolloutConfig

CONFIG_FILE = "config.toml"
"""Name of the per-model config file inside the model's folder; optional (defaults apply)."""

PROVIDER_ALIASES = {
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
"""Short execution-provider names accepted in config, mapped to ONNX Runtime's names."""


class WarmupConfig(BaseModel):
    """Inference runs made on zero-filled inputs before a version is reported ready."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runs: int = Field(1, ge=0)
    """Warm-up runs; 0 skips warm-up."""
    rows: int = Field(1, ge=1)
    """Rows per warm-up run (for models with a batch dimension)."""


class VersionPolicy(BaseModel):
    """Which numbered version folders are loaded: all (the default), the latest N, or a given list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latest: int | None = Field(None, ge=1)
    """Load only the N highest-numbered versions."""
    specific: list[int] | None = None
    """Load only these versions."""

    @model_validator(mode="after")
    def _one_kind(self) -> VersionPolicy:
        if self.latest is not None and self.specific is not None:
            raise ValueError("version_policy takes `latest` or `specific`, not both")
        return self

    def select(self, available: list[int]) -> list[int]:
        """The versions of `available` this policy loads, in ascending order."""
        ordered = sorted(available)
        if self.latest is not None:
            return ordered[-self.latest :]
        if self.specific is not None:
            wanted = set(self.specific)
            return [v for v in ordered if v in wanted]
        return ordered


class ModelConfig(BaseModel):
    """How one model is served. Every field is optional in `config.toml`.

    >>> cfg = ModelConfig.model_validate({"max_batch_size": 32, "labels": ["no", "yes"]})
    >>> cfg.max_batch_size
    32
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(64, ge=0)
    """Most rows one ONNX Runtime run takes; 0 means the model has no batch dimension."""
    max_queue_delay_ms: float = Field(0.0, ge=0)
    """Extra milliseconds a batch may wait for more requests; 0 dispatches as soon as an instance is free."""
    preferred_batch_sizes: list[int] = []
    """Batch sizes (rows) to cut at when the queue holds more; each at most max_batch_size."""
    max_queue_size: int = Field(1024, ge=1)
    """Most requests waiting for an instance; more are refused with RESOURCE_EXHAUSTED."""
    instances: int = Field(1, ge=1)
    """ONNX Runtime sessions (each with its worker thread) serving this model version in parallel."""
    execution_providers: list[str] = ["cuda", "cpu"]
    """Execution providers in priority order (cuda, cpu, tensorrt, or ONNX Runtime names)."""
    gpu_device_id: int = Field(0, ge=0)
    """CUDA device the CUDA provider runs on."""
    intra_op_threads: int = Field(0, ge=0)
    """ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose."""
    inter_op_threads: int = Field(0, ge=0)
    """ONNX Runtime inter-op threads; 0 lets ONNX Runtime choose."""
    labels: list[str] = []
    """For classifiers: one label per class, in the column order of the probability output."""
    probability_output: str | None = None
    """For classifiers: the output holding class probabilities, shape [rows, classes]."""
    warmup: WarmupConfig = WarmupConfig()
    """Warm-up before the version is reported ready."""
    version_policy: VersionPolicy = VersionPolicy()
    """Which version folders to load."""
    optimization_level: Literal["disabled", "basic", "extended", "all"] = "all"
    """ONNX Runtime graph optimisation level."""
    io_binding: Literal["auto", "on", "off"] = "auto"
    """ONNX Runtime IOBinding: each run's inputs go to the device in one copy and its outputs come back in one, with
    no staging in between. `auto`: on when the version runs on a GPU provider; `on`: always; `off`: never."""
    pinned_buffers: Literal["auto", "off"] = "auto"
    """With IOBinding on a CUDA provider, copy inputs into page-locked (pinned) host buffers allocated once and reused,
    and bind outputs of known shape to pinned buffers, so transfers go by DMA without the driver's staging copy.
    `auto`: when ONNX Runtime offers pinned memory for the device; `off`: bind pageable numpy memory."""
    cuda_graph: bool = False
    """Run from fixed input and output buffers bound once, and on the CUDA provider capture the graph on the first run
    and replay it after (fewer kernel launches). Needs every input and output shape fixed (so max_batch_size = 0)."""
    nonfinite_inputs: Literal["allow", "reject"] = "allow"
    """Floating-point inputs holding NaN or infinity: passed to the model, or refused with INVALID_ARGUMENT."""
    rollout: RolloutConfig | None = None
    """How requests that name no version are split between versions (see `rollout_config`); changing it
    reloads no version."""

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if not self.execution_providers:
            raise ValueError("execution_providers must name at least one provider")
        if self.labels and not self.probability_output:
            raise ValueError("labels are given but probability_output is not")
        if any(p < 1 or p > self.max_batch_size for p in self.preferred_batch_sizes):
            raise ValueError(f"preferred_batch_sizes must lie in 1..max_batch_size ({self.max_batch_size})")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be distinct")
        return self

    @property
    def ort_providers(self) -> list[str]:
        """The configured providers under ONNX Runtime's names."""
        return [PROVIDER_ALIASES.get(p.lower(), p) for p in self.execution_providers]

    @property
    def is_classifier(self) -> bool:
        """True when the config names a probability output (predictions by class can be reported)."""
        return self.probability_output is not None


class ConfigError(ValueError):
    """A config file that cannot be read or does not validate; the message says where and why."""


def load_config(model_dir: Path) -> ModelConfig:
    """Read `config.toml` from a model folder, or the defaults when there is none."""
    path = model_dir / CONFIG_FILE
    if not path.exists():
        return ModelConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return ModelConfig.model_validate(data)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{CONFIG_FILE} is not valid TOML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{CONFIG_FILE} is invalid: {problems}") from exc
