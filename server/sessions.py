"""ONNX Runtime sessions: created once per model version at load, run off the event loop."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from protos.tensors import NUMPY_DTYPES
from server.model_config import ModelConfig
from server.signature import Signature

logger = logging.getLogger(__name__)

Arrays = dict[str, npt.NDArray[np.generic]]

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
        for name, array in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        device_type, device_id = self.device
        for name in output_names:
            binding.bind_output(name, device_type, device_id)
        self._session.run_with_iobinding(binding)
        return dict(zip(output_names, binding.copy_outputs_to_cpu(), strict=True))

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
