"""The zoo's models as the e2e tests see them: their files, independent references, small HTTP helpers.

The references here are written from model.json and onnxruntime alone (no service code): the test
proves the server against them, not against itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest

from tests.helpers.servers import MODELS

GPT = "pydoc-gpt"
DATES = "dates-seq2seq"
GAN = "digits-gan-generator"
DISCRIMINATOR = "digits-gan-discriminator"
SEQUENCE_MODELS = ("digits-rnn", "digits-lstm", "digits-gru", "digits-transformer")


def model_dir(name: str) -> Path:
    return MODELS / name / "1"


def require_models(*names: str) -> None:
    """Skip (with the reason) unless these zoo models are in this checkout."""
    missing = [n for n in names if not (model_dir(n) / "model.onnx").is_file()]
    if missing:
        pytest.skip(f"zoo model(s) not committed yet: {', '.join(missing)} (training/ writes them)")


def manifest(name: str) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads((model_dir(name) / "model.json").read_bytes())
    return document


def session(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_dir(name) / "model.onnx"), providers=["CPUExecutionProvider"])


class Vocabulary:
    """model.json's character vocabulary, read directly (independent of service.runtime.tokenizer)."""

    def __init__(self, name: str) -> None:
        spec = manifest(name)["tokenizer"]
        self.tokens: list[str] = spec["vocab"]
        self.special: dict[str, int] = spec["special_tokens"]
        specials = set(self.special.values())
        self.ids = {t: i for i, t in enumerate(self.tokens) if i not in specials}

    def encode(self, text: str) -> list[int]:
        return [self.ids[c] for c in text]

    def text(self, token: int) -> str:
        return "" if token in self.special.values() else self.tokens[token]


def reference_lm_greedy(prompt: str, max_tokens: int, past_the_window: str = "restart") -> list[str]:
    """pydoc-gpt greedy decoding, argmax of the last position per token, over the last `window` tokens
    of the prompt. Past the window, "restart" starts the context again from its last `window // 2`
    tokens (the decode loop's documented policy, README "Generation"); "crop" takes the last `window`
    tokens at every step (the full-recompute loop of a model without KV-cache graphs)."""
    vocab, sess, window = Vocabulary(GPT), session(GPT), manifest(GPT)["max_sequence_length"]
    eos = vocab.special.get("eos")
    ids, pieces = vocab.encode(prompt), []
    start = max(len(ids) - window, 0)
    for _ in range(max_tokens):
        if len(ids) - start > window:
            start = len(ids) - (window // 2 if past_the_window == "restart" else window)
        (logits,) = sess.run(["logits"], {"input_ids": np.array([ids[start:]], dtype=np.int64)})
        token = int(np.argmax(logits[0, -1]))
        if token == eos:
            break
        ids.append(token)
        pieces.append(vocab.text(token))
    return pieces


def reference_seq2seq_greedy(source: str, max_tokens: int = 64) -> str:
    """dates-seq2seq greedy decoding: bos, then argmax of the last decoder position until eos."""
    vocab, sess, spec = Vocabulary(DATES), session(DATES), manifest(DATES)
    limit = spec.get("max_target_length") or spec["max_sequence_length"]
    src = np.array([vocab.encode(source)], dtype=np.int64)
    decoded = [vocab.special["bos"]]
    while len(decoded) < min(limit, max_tokens + 1):
        feed = {"encoder_input_ids": src, "decoder_input_ids": np.array([decoded], dtype=np.int64)}
        (logits,) = sess.run(["logits"], feed)
        token = int(np.argmax(logits[0, -1]))
        if token == vocab.special["eos"]:
            break
        decoded.append(token)
    return "".join(vocab.text(t) for t in decoded[1:])


def generate(client: httpx.Client, model: str, text: str, **parameters: Any) -> dict[str, Any]:
    response = client.post(
        f"/v2/models/{model}/generate", json={"text_input": text, "parameters": parameters}
    )
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def stream_events(client: httpx.Client, model: str, text: str, **parameters: Any) -> list[dict[str, Any]]:
    body = {"text_input": text, "parameters": parameters}
    events = []
    with client.stream("POST", f"/v2/models/{model}/generate_stream", json=body) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line:
                assert line.startswith("data: "), line
                events.append(orjson.loads(line.removeprefix("data: ")))
    return events


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when the labelled child does not exist yet)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0
