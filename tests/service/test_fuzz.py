"""Seeded random mutations of valid V2 and V1 requests: every answer is a 2xx or a 4xx, never a 5xx."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.apps import make_client

VALUES: list[Any] = [
    float("nan"), float("inf"), 2**64, 10**30, -(2**70), 0, 1, -1, 1.5, 1e39, -1e300, 2**63, True, False,
    None, "x", "", [], {}, [1], [[1]], {"a": 1}, 3, 4, 2, 30, "FP32", "BYTES", "BOOL", "INT64", "input",
    "output", "a", "b", "logits", "probabilities", -5,
]  # fmt: skip
EXTRA_KEYS = ["parameters", "outputs", "id", "binary_data_size", "classification", "binary_data"]
MODELS = {
    "iris-like": ("input", [1, 4], "FP32"),
    "binary-like": ("input", [1, 30], "FP32"),
    "adder": ("a", [1, 2], "FP32"),
    "identity-bytes": ("input", [1, 3], "BYTES"),
    "identity-bool": ("input", [1, 3], "BOOL"),
    "identity-uint64": ("input", [1, 3], "UINT64"),
    "identity-fp16": ("input", [1, 3], "FP16"),
    "sequence": ("input_ids", [1, 3], "INT64"),
}
SAMPLE = {"FP32": 0.5, "FP16": 0.5, "BYTES": "s", "BOOL": True, "UINT64": 1, "INT64": 1}


def mutate(rng: random.Random, value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            roll = rng.random()
            if roll < 0.1:
                continue
            out[key] = rng.choice(VALUES) if roll < 0.3 else mutate(rng, item)
        if rng.random() < 0.1:
            out[rng.choice(EXTRA_KEYS)] = rng.choice(
                [*VALUES, {"classification": 2}, {"binary_data_size": 4}]
            )
        return out
    if isinstance(value, list):
        items = [mutate(rng, item) for item in value]
        if items and rng.random() < 0.1:
            items.pop()
        if rng.random() < 0.1:
            items.append(rng.choice(VALUES))
        return items
    return value if rng.random() < 0.8 else rng.choice(VALUES)


@pytest.mark.slow
def test_mutated_requests_never_get_a_server_error(repo_dir: Path) -> None:
    rng = random.Random(0)
    server_errors = []
    with make_client(repo_dir, max_body_bytes=65536) as client:
        for _ in range(1500):
            model = rng.choice(list(MODELS))
            name, shape, datatype = MODELS[model]
            data = [SAMPLE[datatype]] * (shape[0] * shape[1])
            output = "logits" if model.endswith("-like") else "output"
            if rng.random() < 0.3:
                path = f"/v1/models/{model}:{rng.choice(['predict', 'classify'])}"
                row = data[: shape[1]]
                body = mutate(rng, {"instances": [row]} if rng.random() < 0.5 else {"inputs": {name: [row]}})
            else:
                path = f"/v2/models/{model}/infer"
                tensor = {"name": name, "shape": shape, "datatype": datatype, "data": data}
                request = {
                    "id": "x",
                    "inputs": [tensor],
                    "outputs": [{"name": output, "parameters": {"classification": 2}}],
                }
                body = mutate(rng, request)
            response = client.post(
                path, content=json.dumps(body).encode()
            )  # json allows NaN, like many clients
            if response.status_code >= 500:
                server_errors.append((path, response.status_code, response.text[:200]))
        good = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.1] * 4}]}
        assert client.post("/v2/models/iris-like/infer", json=good).status_code == 200
    assert server_errors == []
