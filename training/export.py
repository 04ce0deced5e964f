"""ONNX export with verification after EVERY export (fail loudly, never ship a silently wrong graph):
every intended dynamic axis is a named dim_param, the full checker passes, and onnxruntime matches
PyTorch (eval mode) at a batch size and sequence length that differ from the export example."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn
from torch.export import Dim

from training.evaluate import run_onnx

OPSET = 18


@dataclass
class ExportSpec:
    input_names: list[str]
    output_names: list[str]
    example: tuple[torch.Tensor, ...]  # traced/exported with these
    check: tuple[torch.Tensor, ...]  # parity inputs: other batch size and sequence length
    dynamic: dict[str, dict[int, str]]  # tensor name (inputs and outputs) -> {axis: dim_param}
    tolerance: float = 1e-4  # on |onnxruntime - torch| / (1 + |torch|): see parity()
    exporter: str = "dynamo"  # dynamo | legacy (nn.RNN loses its sequence axis under dynamo)
    max_dims: dict[str, int] = field(default_factory=dict)  # dim_param -> largest allowed size


class ExportError(RuntimeError):
    pass


def _dynamic_shapes(module: nn.Module, spec: ExportSpec) -> tuple[Any, ...]:
    dims: dict[str, Any] = {}
    out = []
    for name in spec.input_names:
        axes = {}
        for axis, dim_name in spec.dynamic.get(name, {}).items():
            if dim_name not in dims:
                dims[dim_name] = (
                    Dim(dim_name, max=spec.max_dims[dim_name]) if dim_name in spec.max_dims else Dim(dim_name)
                )
            axes[axis] = dims[dim_name]
        out.append(axes)
    # torch.export matches dynamic_shapes to forward()'s parameters: a *args parameter takes one tuple.
    params = list(inspect.signature(module.forward).parameters.values())
    if params and params[-1].kind is inspect.Parameter.VAR_POSITIONAL:
        return (*out[: len(params) - 1], tuple(out[len(params) - 1 :]))
    return tuple(out)


def _export(module: nn.Module, spec: ExportSpec, path: Path) -> None:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # The exporters warn about deprecations and tracing internals; the checks below are what count.
        warnings.simplefilter("ignore")
        if spec.exporter == "legacy":
            torch.onnx.export(
                module, spec.example, str(path), dynamo=False, opset_version=OPSET,
                input_names=spec.input_names, output_names=spec.output_names, dynamic_axes=spec.dynamic,
            )  # fmt: skip
        else:
            torch._dynamo.reset()  # a previous export's cached specialisations must not leak in
            torch.onnx.export(
                module, spec.example, str(path), dynamo=True, opset_version=OPSET, external_data=False,
                input_names=spec.input_names, output_names=spec.output_names,
                dynamic_shapes=_dynamic_shapes(module, spec), verbose=False,
            )  # fmt: skip


def check_dim_params(model: onnx.ModelProto, dynamic: dict[str, dict[int, str]]) -> None:
    tensors = {v.name: v for v in [*model.graph.input, *model.graph.output]}
    for name, axes in dynamic.items():
        if name not in tensors:
            raise ExportError(f"graph has no input/output named {name!r}; it has {sorted(tensors)}")
        dims = tensors[name].type.tensor_type.shape.dim
        for axis, dim_name in axes.items():
            got = dims[axis].dim_param or f"static {dims[axis].dim_value}"
            if dims[axis].dim_param != dim_name:
                raise ExportError(f"{name} axis {axis} should be dim_param {dim_name!r}, but it is {got}")


def parity(module: nn.Module, spec: ExportSpec, path: Path) -> tuple[float, float]:
    """Over all outputs at the spec's check inputs: max |onnxruntime - torch|, and max
    |onnxruntime - torch| / (1 + |torch|), the difference the tolerance bounds: absolute for values
    under 1, relative above (a regression's output in the hundreds is 1.5e-5 apart at one float32 step)."""
    module.eval()
    with torch.no_grad():
        ref = module(*spec.check)
    ref_list = list(ref) if isinstance(ref, tuple | list) else [ref]
    got = run_onnx(path, {n: t.numpy() for n, t in zip(spec.input_names, spec.check, strict=True)})
    diff = scaled = 0.0
    for r, g in zip(ref_list, got, strict=True):
        if r.shape != g.shape:
            raise ExportError(f"onnxruntime output shape {g.shape} != torch {tuple(r.shape)}")
        apart = np.abs(r.numpy() - g)
        diff = max(diff, float(np.max(apart)))
        scaled = max(scaled, float(np.max(apart / (1 + np.abs(r.numpy())))))
    return diff, scaled


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(module: nn.Module, spec: ExportSpec, path: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Export, stamp metadata_props, verify; returns model.json's `onnx` record."""
    module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    _export(module, spec, path)
    model = onnx.load(str(path))
    check_dim_params(model, spec.dynamic)
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    diff, scaled = parity(module, spec, path)
    if not scaled <= spec.tolerance:
        raise ExportError(
            f"onnxruntime differs from torch by {diff:.3g} ({scaled:.3g} of 1 + |torch|) > {spec.tolerance:g}"
        )
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {
        "opset": opset,
        "exporter": spec.exporter,
        "dynamic_axes": {n: [a[k] for k in sorted(a)] for n, a in spec.dynamic.items()},
        "parity_max_abs_diff": diff,
        "parity_check_shapes": {n: list(t.shape) for n, t in zip(spec.input_names, spec.check, strict=True)},
        "export_example_shapes": {
            n: list(t.shape) for n, t in zip(spec.input_names, spec.example, strict=True)
        },
    }


@dataclass
class CacheGraph:
    """An extra graph beside model.onnx (KV-cache decoding), exported and verified like model.onnx."""

    file: str
    module: nn.Module
    spec: ExportSpec
    inputs: list[dict[str, Any]]  # model.json tensor specs, as the plain graph's
    outputs: list[dict[str, Any]]


@dataclass
class KVCache:
    layers: int
    heads: int
    head_dim: int
    graphs: dict[str, CacheGraph]  # model.json kv_cache.graphs key ("decoder", "encoder") -> graph
    window_policy: str
    # The version folder (model.onnx and the graphs written) -> check name -> its measurements, each
    # with max_abs_diff and, where tokens are decoded, tokens_equal (training.kv_cache).
    verify: Callable[[Path], dict[str, dict[str, Any]]]
    tolerance: float = 1e-4


def export_cache(kv: KVCache, folder: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Export and verify each cache graph, then check the cached decode against model.onnx (already in
    `folder`); returns model.json's `kv_cache` record."""
    graphs = {}
    for key, graph in kv.graphs.items():
        path = folder / graph.file
        record = export(graph.module, graph.spec, path, metadata | {"graph": graph.file})
        graphs[key] = {
            "file": graph.file, "sha256": sha256(path), "inputs": graph.inputs, "outputs": graph.outputs,
            "parity_max_abs_diff": record.pop("parity_max_abs_diff"), "onnx": record,
        }  # fmt: skip
    checks = kv.verify(folder)
    for name, check in checks.items():
        if not check.get("tokens_equal", True):
            raise ExportError(f"kv-cache check {name}: the cached decode chose other tokens: {check}")
        if not check["max_abs_diff"] <= kv.tolerance:
            raise ExportError(f"kv-cache check {name}: logits differ by {check['max_abs_diff']:.3g}")
    return {"layers": kv.layers, "heads": kv.heads, "head_dim": kv.head_dim, "graphs": graphs,
            "window_policy": kv.window_policy, "checks": checks}  # fmt: skip
