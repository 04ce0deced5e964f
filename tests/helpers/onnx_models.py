"""Small ONNX models built with onnx.helper, and a helper that writes them into a model repository.

They stand in for the zoo (and cover what the zoo never has: every V2 datatype, several inputs,
bare and corrupt models).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18
V2_TO_ONNX = {
    "BOOL": TensorProto.BOOL,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def classifier(features: int, classes: int, seed: int = 0) -> onnx.ModelProto:
    """input FP32 [batch, F] -> logits [batch, C] (C=1: binary) -> probabilities (sigmoid/softmax)."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(features, classes)).astype(np.float32)
    bias = rng.normal(size=(classes,)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["input", "W"], ["z"]),
        helper.make_node("Add", ["z", "B"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["probabilities"])
        if classes == 1
        else helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes]),
        ],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")],
    )
    return _model(graph)


def identity(datatype: str, width: int = 3) -> onnx.ModelProto:
    """input <datatype> [batch, width] -> output, unchanged."""
    kind = V2_TO_ONNX[datatype]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "identity",
        [helper.make_tensor_value_info("input", kind, ["batch", width])],
        [helper.make_tensor_value_info("output", kind, ["batch", width])],
    )
    return _model(graph)


def adder() -> onnx.ModelProto:
    """Two inputs a, b FP32 [batch, 2] -> sum FP32 [batch, 2] and difference."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Sub", ["a", "b"], ["difference"])],
        "adder",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 2]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("difference", TensorProto.FLOAT, ["batch", 2]),
        ],
    )
    return _model(graph)


# The sequence model's ids are 16 characters (its table has 16 rows).
SEQUENCE_TOKENIZER = {"type": "char", "vocab": list("abcdefghijklmnop"), "special_tokens": {}}


def sequence_model(width: int = 4) -> onnx.ModelProto:
    """input_ids INT64 [batch, sequence] -> logits FP32 [batch, sequence, width] (a one-hot-ish lookup)."""
    table = np.arange(16 * width, dtype=np.float32).reshape(16, width) / 10
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "input_ids"], ["logits"], axis=0)],
        "sequence",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", width])],
        [numpy_helper.from_array(table, "E")],
    )
    return _model(graph)


LATENT = 4


def generator_model() -> onnx.ModelProto:
    """noise [batch, 4] -> images [batch, 64] = noise @ W (a stand-in for the GAN's generator)."""
    weights = np.random.default_rng(1).normal(4, 8, size=(LATENT, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["noise", "W"], ["images"])],
        "generator",
        [helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["batch", LATENT])],
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor("W", TensorProto.FLOAT, [LATENT, 64], weights.ravel())],
    )
    return _model(graph)


def unsupported_op() -> onnx.ModelProto:
    """A well-formed file whose op onnxruntime does not know."""
    node = helper.make_node("NoSuchOp", ["input"], ["output"], domain="recap.unknown")
    graph = helper.make_graph(
        [node],
        "unsupported",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 2])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("recap.unknown", 1)]
    )
    model.ir_version = 9
    return model


def write_model(
    root: Path,
    name: str,
    model: onnx.ModelProto | bytes,
    *,
    version: int = 1,
    manifest: dict[str, Any] | None = None,
    with_sha: bool = True,
) -> Path:
    """models/<name>/<version>/model.onnx (+ model.json when `manifest` is given); returns the onnx path."""
    folder = root / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    data = model if isinstance(model, bytes) else model.SerializeToString()
    path = folder / "model.onnx"
    path.write_bytes(data)
    if manifest is not None:
        document = {"name": name, "version": version, **manifest}
        if with_sha and "sha256" not in document:
            document["sha256"] = hashlib.sha256(data).hexdigest()
        (folder / "model.json").write_text(json.dumps(document))
    return path


def build_repository(root: Path) -> Path:
    """The standard test repository: classifiers, every datatype, multi-input, bare, broken models."""
    write_model(
        root,
        "iris-like",
        classifier(4, 3, seed=1),
        manifest={"task": "multiclass_classification", "labels": ["setosa", "versicolor", "virginica"]},
    )
    write_model(
        root,
        "iris-like",
        classifier(4, 3, seed=2),
        version=2,
        manifest={
            "task": "multiclass_classification",
            "labels": ["setosa", "versicolor", "virginica"],
            "max_batch_size": 8,
        },
    )
    write_model(
        root,
        "binary-like",
        classifier(30, 1, seed=3),
        manifest={"task": "binary_classification", "labels": ["malignant", "benign"], "max_batch_size": 64},
    )
    for datatype in V2_TO_ONNX:
        write_model(root, f"identity-{datatype.lower()}", identity(datatype), manifest={"task": "regression"})
    write_model(root, "adder", adder())  # bare: no model.json
    sequence = {"task": "language_model", "max_sequence_length": 8, "tokenizer": SEQUENCE_TOKENIZER}
    write_model(root, "sequence", sequence_model(), manifest=sequence)
    write_model(root, "corrupt", b"this is not an onnx file", manifest={"task": "regression"})
    write_model(root, "tampered", classifier(4, 3), manifest={"task": "regression", "sha256": "0" * 64})
    write_model(root, "unsupported", unsupported_op())
    return root
