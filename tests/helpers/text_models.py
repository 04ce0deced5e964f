"""Tiny text models built with onnx.helper: a bigram language model and a seq2seq that copies.

Their behaviour is known exactly, so the token loop and the generate routes can be checked token for
token without the zoo.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

VOCAB = ["<pad>", "<bos>", "<eos>", "a", "b", "c", "d", " "]
SPECIALS = {"pad": 0, "bos": 1, "eos": 2}
V = len(VOCAB)
A, B, C, D, SPACE, EOS, BOS = 3, 4, 5, 6, 7, 2, 1


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def bigram_lm_model(table: np.ndarray) -> onnx.ModelProto:
    """input_ids [batch, sequence] -> logits [batch, sequence, vocab] = table[input_ids]."""
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["logits"], axis=0)],
        "bigram",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", V])],
        [helper.make_tensor("table", TensorProto.FLOAT, table.shape, table.astype(np.float32).ravel())],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def bigram_lm(table: np.ndarray) -> ort.InferenceSession:
    return session(bigram_lm_model(table))


def copy_seq2seq_model() -> onnx.ModelProto:
    """Decoder position j predicts source[j], then eos: a seq2seq that copies its input."""
    nodes = [
        helper.make_node("Shape", ["decoder_input_ids"], ["dec_shape"]),
        helper.make_node("Expand", ["eos", "dec_shape"], ["eos_fill"]),
        helper.make_node("Concat", ["encoder_input_ids", "eos_fill"], ["padded"], axis=1),
        helper.make_node("Shape", ["decoder_input_ids"], ["tgt_len"], start=1, end=2),
        helper.make_node("Slice", ["padded", "zero", "tgt_len", "one"], ["targets"]),
        helper.make_node("Gather", ["identity", "targets"], ["logits"], axis=0),
    ]
    inits = [
        helper.make_tensor("eos", TensorProto.INT64, [1, 1], [EOS]),
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("identity", TensorProto.FLOAT, [V, V], np.eye(V, dtype=np.float32).ravel()),
    ]
    graph = helper.make_graph(
        nodes,
        "copy",
        [
            helper.make_tensor_value_info("encoder_input_ids", TensorProto.INT64, ["batch", "source"]),
            helper.make_tensor_value_info("decoder_input_ids", TensorProto.INT64, ["batch", "target"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "target", V])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def copy_seq2seq() -> ort.InferenceSession:
    return session(copy_seq2seq_model())


def cycle_table(eos_after: int | None = None) -> np.ndarray:
    """a->b->c->d->' '->a ...; optionally `eos_after` -> eos."""
    order = [A, B, C, D, SPACE]
    table = np.zeros((V, V), dtype=np.float32)
    for i, tok in enumerate(order):
        table[tok, order[(i + 1) % len(order)]] = 5.0
    table[BOS, A] = 5.0
    if eos_after is not None:
        table[eos_after] = 0.0
        table[eos_after, EOS] = 5.0
    return table
