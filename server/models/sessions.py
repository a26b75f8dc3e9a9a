"""ONNX Runtime sessions: created once per model version at load, run off the event loop."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from vigil.protos.tensors import NUMPY_DTYPES
from vigil.server.batching.records import Arrays
from vigil.server.models.config import ModelConfig
from vigil.server.models.cuda import cuda_unavailable_reason
from vigil.server.models.pinned_buffers import HostStaging, pinned_memory
from vigil.server.models.signature import Signature

logger = logging.getLogger(__name__)


_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")

_unavailable_providers: set[str] = set()
"""GPU providers ONNX Runtime could not create in this process (no driver, missing CUDA libraries).

`onnxruntime-gpu` lists CUDA as available even where it cannot run, and every session that asks for it
retries, fails and logs. Once one session shows a provider cannot be created, later sessions skip it.
"""

_OPTIMIZATION_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class ModelSession:
    """One ONNX Runtime InferenceSession and the signature read from it. `run` blocks: call it from a thread.

    >>> session = ModelSession(Path("model.onnx"), ModelConfig())
    >>> session.providers            # what ONNX Runtime really uses, not what was asked for
    ['CPUExecutionProvider']
    """

    def __init__(self, path: Path, config: ModelConfig) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.intra_op_threads
        options.inter_op_num_threads = config.inter_op_threads
        options.graph_optimization_level = _OPTIMIZATION_LEVELS[config.optimization_level]
        if any(p in _GPU_PROVIDERS for p in config.ort_providers) and cuda_unavailable_reason() is not None:
            _unavailable_providers.update(_GPU_PROVIDERS)  # said once, in Vigil's words; ONNX Runtime is not asked
        requested = [p for p in config.ort_providers if p not in _unavailable_providers]
        if not requested:
            requested = ["CPUExecutionProvider"]
        providers: list[str | tuple[str, dict[str, object]]] = [
            (name, _gpu_options(name, config)) if name in _GPU_PROVIDERS else name for name in requested
        ]
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        # Only the session tells which providers really run it (see _unavailable_providers).
        self.providers: list[str] = list(self._session.get_providers())
        self.signature = Signature.from_session(self._session)
        on_gpu = bool(self.providers) and self.providers[0] in _GPU_PROVIDERS
        self.device = ("cuda", config.gpu_device_id) if on_gpu else ("cpu", 0)
        """Where IOBinding leaves outputs until they are copied back: the GPU's memory when one runs the model."""
        self.io_binding = config.io_binding == "on" or (config.io_binding == "auto" and on_gpu)
        self._batched = config.max_batch_size > 0
        self._staging: HostStaging | None = None
        self._stage_outputs = True
        """Pinned host buffers inputs are copied into and outputs land in, on a GPU with IOBinding."""
        if on_gpu and self.io_binding and config.pinned_buffers == "auto":
            memory = pinned_memory(config.gpu_device_id)
            if memory is not None:
                self._staging = HostStaging(memory)
            else:
                logger.info("%s: ONNX Runtime offers no pinned host memory for CUDA device %d; inputs are bound "
                            "from pageable memory", path.parent.parent.name, config.gpu_device_id)
        self._fixed = FixedBuffers(self._session, self.signature, self.device) if config.cuda_graph else None
        missing = [p for p in requested if p in _GPU_PROVIDERS and p not in self.providers]
        if missing:
            _unavailable_providers.update(missing)
            logger.warning(
                "%s could not be created (no usable GPU or CUDA libraries); %s runs on %s, and later "
                "models will not ask for it", ", ".join(missing), path.parent.parent.name, ", ".join(self.providers),
            )

    def run(self, inputs: Mapping[str, npt.NDArray[np.generic]], output_names: Sequence[str]) -> Arrays:
        """Run the graph once; returns the named outputs. Blocks; raises what ONNX Runtime raises."""
        if self._fixed is not None:
            return self._fixed.run(inputs, output_names)
        if self.io_binding and not any(a.dtype == np.dtype(object) for a in inputs.values()):
            return self._run_bound(inputs, output_names)
        results = self._session.run(list(output_names), dict(inputs))
        return {name: np.asarray(value) for name, value in zip(output_names, results, strict=True)}

    def _run_bound(self, inputs: Mapping[str, npt.NDArray[np.generic]], output_names: Sequence[str]) -> Arrays:
        """One copy of each input to the device, the run, one copy of each output back."""
        binding = self._session.io_binding()
        staging = self._staging
        for name, array in inputs.items():
            if staging is not None:
                binding.bind_ortvalue_input(name, staging.stage(f"input:{name}", array))
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(array))
        shapes = self._output_shapes(inputs, output_names) if staging is not None and self._stage_outputs else None
        if staging is not None and shapes is not None:
            staged = {name: staging.buffer(f"output:{name}", shape, dtype) for name, (shape, dtype) in shapes.items()}
            for name, value in staged.items():
                binding.bind_ortvalue_output(name, value)
            try:
                self._session.run_with_iobinding(binding)
            except Exception:
                # The shapes come from the signature, a guess for an output whose open first dimension is not the
                # rows: run again with the outputs left to ONNX Runtime. If that works, the guess was wrong, so stop
                # guessing for this session; if not, the model itself failed and the run's error stands.
                self._stage_outputs = False
                try:
                    outputs = self._run_bound(inputs, output_names)
                except Exception:
                    self._stage_outputs = True
                    raise
                logger.info("outputs of %s do not fit buffers shaped from its signature; they come back through "
                            "ONNX Runtime's own copy", self.signature.output_names)
                return outputs
            return {name: np.array(value.numpy()) for name, value in staged.items()}  # copies: buffers are reused
        device_type, device_id = self.device
        for name in output_names:
            binding.bind_output(name, device_type, device_id)
        self._session.run_with_iobinding(binding)
        return dict(zip(output_names, binding.copy_outputs_to_cpu(), strict=True))

    def _output_shapes(self, inputs: Mapping[str, npt.NDArray[np.generic]], output_names: Sequence[str]
                       ) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]] | None:
        """Each output's shape for this run when the signature fixes it (every dimension known, or only the batch
        dimension open, which is the run's rows), or None when some output's shape is only known after the run."""
        rows = len(next(iter(inputs.values()))) if self._batched and inputs else None
        out: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {}
        for name in output_names:
            spec = self.signature.output(name)
            if spec is None:
                return None
            dims = list(spec.shape)
            if self._batched and dims and dims[0] is None:
                dims[0] = rows
            if any(d is None for d in dims) or NUMPY_DTYPES[spec.dtype] == np.dtype(object):
                return None
            out[name] = (tuple(int(d) for d in dims if d is not None), NUMPY_DTYPES[spec.dtype])
        return out

    def warm_up(self, *, rows: int, runs: int, has_batch_dim: bool) -> None:
        """Run zero-filled inputs `runs` times so the first real request does not pay for lazy set-up."""
        if runs == 0:
            return
        inputs: Arrays = {}
        for spec in self.signature.inputs:
            dims = [d if d is not None else 1 for d in spec.shape]
            if has_batch_dim and dims:
                dims[0] = rows
            dtype = NUMPY_DTYPES[spec.dtype]
            if dtype == np.dtype(object):
                inputs[spec.name] = np.full(dims, "", dtype=object)
            else:
                inputs[spec.name] = np.zeros(dims, dtype=dtype)
        for _ in range(runs):
            self.run(inputs, self.signature.output_names)


def _gpu_options(provider: str, config: ModelConfig) -> dict[str, object]:
    options: dict[str, object] = {"device_id": config.gpu_device_id}
    if config.cuda_graph and provider == "CUDAExecutionProvider":
        options["enable_cuda_graph"] = "1"
    return options


class FixedBuffers:
    """Inputs and outputs in buffers allocated and bound once, for models whose every shape is fixed: each run
    copies the inputs into the same memory and reads the same outputs. On the CUDA provider with `enable_cuda_graph`
    ONNX Runtime captures the graph on the first run and replays it after, which needs exactly this."""

    def __init__(self, session: ort.InferenceSession, signature: Signature, device: tuple[str, int]) -> None:
        shapes: dict[str, list[int]] = {}
        for spec in (*signature.inputs, *signature.outputs):
            if any(d is None for d in spec.shape):
                raise ValueError(f"cuda_graph needs fixed shapes, but '{spec.name}' has shape {spec.shape_text}")
            if NUMPY_DTYPES[spec.dtype] == np.dtype(object):
                raise ValueError(f"cuda_graph cannot bind STRING tensor '{spec.name}'")
            shapes[spec.name] = [int(d) for d in spec.shape if d is not None]
        device_type, device_id = device
        self._session = session
        self._binding = session.io_binding()

        def allocate(name: str, dtype: int) -> ort.OrtValue:
            return ort.OrtValue.ortvalue_from_shape_and_type(shapes[name], NUMPY_DTYPES[dtype], device_type, device_id)

        self._inputs = {spec.name: allocate(spec.name, spec.dtype) for spec in signature.inputs}
        self._outputs = {spec.name: allocate(spec.name, spec.dtype) for spec in signature.outputs}
        for name, value in self._inputs.items():
            self._binding.bind_ortvalue_input(name, value)
        for name, value in self._outputs.items():
            self._binding.bind_ortvalue_output(name, value)

    def run(self, inputs: Mapping[str, npt.NDArray[np.generic]], output_names: Sequence[str]) -> Arrays:
        for name, buffer in self._inputs.items():
            buffer.update_inplace(np.ascontiguousarray(inputs[name]))
        self._session.run_with_iobinding(self._binding)
        return {name: np.array(self._outputs[name].numpy()) for name in output_names}
