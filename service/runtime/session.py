"""One onnxruntime session: providers, threads, the graph's tensor specs, input checks and run.

Everything a request needs is computed once here at load time (specs by name, datatypes, output names)
so the hot path only compares and calls `session.run`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument, RuntimeException

from service.errors import InvalidInputError, ModelLoadError
from service.runtime.tensors import DATATYPES, datatype_of_ort

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# Axis names whose length is bounded by model.json's max_sequence_length.
SEQUENCE_AXES = frozenset({"sequence", "source", "target"})
_fallbacks_logged: set[str] = set()


@dataclass(frozen=True)
class SessionConfig:
    """How sessions are built (from Settings)."""

    providers: tuple[str, ...] = ("cpu",)
    strict_providers: bool = False
    gpu_device_id: int = 0
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    graph_optimization_level: str = "all"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output; `dims` holds ints for fixed axes and names (or None) for dynamic ones."""

    name: str
    datatype: str
    dims: tuple[int | str | None, ...]

    @property
    def dtype(self) -> np.dtype[Any] | None:
        return DATATYPES.get(self.datatype)

    @property
    def shape(self) -> list[int]:
        """The V2 metadata shape: -1 for every dynamic axis."""
        return [d if isinstance(d, int) and d >= 0 else -1 for d in self.dims]

    @property
    def batched(self) -> bool:
        """The first axis is dynamic: it is the batch."""
        return bool(self.dims) and not isinstance(self.dims[0], int)

    def as_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


def _specs(args: Sequence[Any]) -> list[TensorSpec]:
    return [
        TensorSpec(
            a.name,
            datatype_of_ort(a.type),
            tuple(
                d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) else None) for d in a.shape
            ),
        )
        for a in args
    ]


def _log_once(message: str) -> None:
    if message not in _fallbacks_logged:
        _fallbacks_logged.add(message)
        log.warning(message)


def _provider_list(config: SessionConfig) -> list[str | tuple[str, dict[str, Any]]]:
    """The providers to ask onnxruntime for, checked against what this build offers."""
    available = ort.get_available_providers()
    chosen: list[str | tuple[str, dict[str, Any]]] = []
    for short in config.providers:
        name = PROVIDERS[short]
        if name not in available:
            message = (
                f"execution provider {short} ({name}) was requested but this onnxruntime build "
                f"offers only {', '.join(available)}"
            )
            if config.strict_providers and short != "cpu":
                raise ModelLoadError(f"{message} (strict providers)")
            _log_once(f"{message}; falling back to the next provider / CPU")
            continue
        if short == "cpu":
            chosen.append(name)
        else:
            chosen.append((name, {"device_id": config.gpu_device_id}))
    if PROVIDERS["cpu"] not in chosen:
        chosen.append(PROVIDERS["cpu"])
    return chosen


class RunControl:
    """Stops a session.run from another thread: onnxruntime checks its terminate flag as it runs."""

    def __init__(self) -> None:
        self.options = ort.RunOptions()

    def stop(self) -> None:
        self.options.terminate = True


class ModelSession:
    """An onnxruntime InferenceSession plus its precomputed specs."""

    def __init__(self, source: Path | bytes, config: SessionConfig, label: str) -> None:
        """`source`: model.onnx's path, or its bytes (exactly the bytes whose sha256 was checked)."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.intra_op_threads
        options.inter_op_num_threads = config.inter_op_threads
        options.graph_optimization_level = _LEVELS[config.graph_optimization_level]
        options.log_severity_level = 3  # onnxruntime's own warnings go through our log instead
        requested = _provider_list(config)
        try:
            model = source if isinstance(source, bytes) else str(source)
            self.session = ort.InferenceSession(model, sess_options=options, providers=requested)
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
            text = str(error).strip()
            if isinstance(source, Path):
                text = text.replace(str(source), "model.onnx")
            first_line = text.splitlines()[0] if text else type(error).__name__
            raise ModelLoadError(f"onnxruntime could not load model.onnx: {first_line[:500]}") from error
        self.providers: list[str] = self.session.get_providers()
        for item in requested:
            name = item if isinstance(item, str) else item[0]
            if name not in self.providers:
                message = f"{label}: onnxruntime did not give the session {name}; it runs on {self.providers}"
                if config.strict_providers:
                    raise ModelLoadError(f"{message} (strict providers)")
                _log_once(message)
        self.inputs = _specs(self.session.get_inputs())
        self.outputs = _specs(self.session.get_outputs())
        self.input_by_name = {spec.name: spec for spec in self.inputs}
        self.output_by_name = {spec.name: spec for spec in self.outputs}
        self.output_names = [spec.name for spec in self.outputs]
        # The input whose first axis counts the rows (None: the graph takes no batch).
        self.batch_input = self.inputs[0].name if self.inputs and self.inputs[0].batched else None

    def run(
        self, feeds: dict[str, np.ndarray], output_names: list[str], control: RunControl | None = None
    ) -> list[np.ndarray]:
        try:
            return self.session.run(output_names, feeds, control.options if control is not None else None)
        except (InvalidArgument, RuntimeException) as error:
            # Inputs passed our checks but the graph rejects them (e.g. dynamic axes that disagree):
            # the client's doing, so a 400 that names the graph's complaint.
            first_line = str(error).strip().splitlines()[0][:300]
            log.info("onnxruntime rejected an input: %s", first_line)
            raise InvalidInputError(f"the model could not run on these inputs: {first_line}") from error


def check_input(
    spec: TensorSpec,
    datatype: str,
    shape: Sequence[int],
    batch_limit: int | None,
    sequence_limit: int | None,
) -> None:
    """Does a (datatype, shape) fit the graph input `spec` and the model's limits? Raises if not."""
    if datatype != spec.datatype:
        raise InvalidInputError(
            f"input {spec.name!r}: datatype {datatype[:32]} does not match the model's {spec.datatype}"
        )
    dims = spec.dims
    if len(shape) != len(dims):
        raise InvalidInputError(
            f"input {spec.name!r}: shape {list(shape)} has {len(shape)} axes, the model expects "
            f"{len(dims)}: {spec.shape}"
        )
    for axis, (got, want) in enumerate(zip(shape, dims, strict=True)):
        if isinstance(want, int):
            if got != want:
                raise InvalidInputError(
                    f"input {spec.name!r}: shape {list(shape)} does not fit the model's {spec.shape} "
                    f"(axis {axis} must be {want})"
                )
        elif want in SEQUENCE_AXES and got == 0:
            raise InvalidInputError(f"input {spec.name!r}: the {want} is empty; expected at least one step")
        elif sequence_limit is not None and want in SEQUENCE_AXES and got > sequence_limit:
            raise InvalidInputError(
                f"input {spec.name!r}: {want} length {got} is over the model's maximum of {sequence_limit}"
            )
    if batch_limit is not None and spec.batched and shape and shape[0] > batch_limit:
        raise InvalidInputError(
            f"input {spec.name!r}: batch of {shape[0]} rows is over the model's limit of {batch_limit}"
        )
