"""A table of bad requests, each with its status and message; then a good request still answers right."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from fastapi.testclient import TestClient

from tests.helpers.apps import make_client

SECRET = "SECRET-PAYLOAD-MARKER"
IRIS = "/v2/models/iris-like/infer"  # version 2: max_batch_size 8


def tensor(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "input",
        "shape": [1, 4],
        "datatype": "FP32",
        "data": [0.1, 0.2, 0.3, 0.4],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def body(*inputs: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"inputs": list(inputs) or [tensor()], **top}


# (case id, path, JSON body or raw bytes, extra headers, status, message fragment)
CASES: list[tuple[str, str, Any, dict[str, str], int, str]] = [
    ("invalid-json", IRIS, b'{"inputs": [', {}, 400, "not valid JSON"),
    (
        "nan-literal",
        IRIS,
        b'{"inputs": [{"name": "input", "data": [NaN]}]}',
        {},
        400,
        "NaN and Infinity are not",
    ),
    ("body-not-object", IRIS, [1, 2], {}, 400, "request body must be a JSON object"),
    ("no-inputs", IRIS, {"id": "x"}, {}, 400, "'inputs' must be a non-empty list"),
    ("empty-inputs", IRIS, {"inputs": []}, {}, 400, "'inputs' must be a non-empty list"),
    ("input-not-object", IRIS, {"inputs": [3]}, {}, 400, "each entry of 'inputs' must be a JSON object"),
    ("input-without-name", IRIS, body(tensor(name=None)), {}, 400, "needs a string 'name'"),
    (
        "unknown-input",
        IRIS,
        body(tensor(name="pixels")),
        {},
        400,
        "unknown input 'pixels'; the model takes input",
    ),
    ("input-twice", IRIS, body(tensor(), tensor()), {}, 400, "input 'input' is given twice"),
    ("no-datatype", IRIS, body(tensor(datatype=None)), {}, 400, "'datatype' must be a string such as FP32"),
    (
        "wrong-datatype",
        IRIS,
        body(tensor(datatype="FP64")),
        {},
        400,
        "datatype FP64 does not match the model's FP32",
    ),
    ("unknown-datatype", IRIS, body(tensor(datatype="FLOAT")), {}, 400, "datatype FLOAT does not match"),
    (
        "shape-not-list",
        IRIS,
        body(tensor(shape="1x4")),
        {},
        400,
        "'shape' must be a list of non-negative integers",
    ),
    ("negative-dim", IRIS, body(tensor(shape=[-1, 4])), {}, 400, "'shape' must be a list of non-negative"),
    ("wrong-rank", IRIS, body(tensor(shape=[4])), {}, 400, "has 1 axes, the model expects 2: [-1, 4]"),
    ("wrong-width", IRIS, body(tensor(shape=[1, 5], data=[0.1] * 5)), {}, 400, "axis 1 must be 4"),
    ("short-data", IRIS, body(tensor(data=[0.1, 0.2, 0.3])), {}, 400, "shape [1, 4] needs 4 values, got 3"),
    ("no-data", IRIS, body(tensor(data=None)), {}, 400, "input 'input' has no 'data'"),
    ("data-not-list", IRIS, body(tensor(data={"a": 1})), {}, 400, "'data' must be a list, got object"),
    (
        "string-in-fp32",
        IRIS,
        body(tensor(data=[0.1, SECRET, 0.3, 0.4])),
        {},
        400,
        "must hold numbers, got string",
    ),
    ("null-in-fp32", IRIS, body(tensor(data=[0.1, None, 0.3, 0.4])), {}, 400, "got null values"),
    ("bool-in-fp32", IRIS, body(tensor(data=[0.1, True, 0.3, 0.4])), {}, 400, "got boolean values"),
    ("fp32-overflow", IRIS, body(tensor(data=[1e39, 0, 0, 0])), {}, 400, "got a value out of range"),
    (
        "ragged-nested",
        IRIS,
        body(tensor(shape=[2, 4], data=[[1, 2, 3, 4], [3]])),
        {},
        400,
        "does not follow shape",
    ),
    (
        "batch-over-limit",
        IRIS,
        body(tensor(shape=[9, 4], data=[0.1] * 36)),
        {},
        400,
        "over the model's limit of 8",
    ),
    ("unknown-output", IRIS, body(outputs=[{"name": "nope"}]), {}, 400, "unknown output 'nope'"),
    (
        "outputs-not-list",
        IRIS,
        body(outputs={"name": "logits"}),
        {},
        400,
        "'outputs' must be a non-empty list",
    ),
    (
        "bad-classification",
        IRIS,
        body(outputs=[{"name": "logits", "parameters": {"classification": "all"}}]),
        {},
        400,
        "'classification' must be a positive integer",
    ),
    (
        "classify-text",
        "/v2/models/identity-bytes/infer",
        body(
            tensor(shape=[1, 3], datatype="BYTES", data=["a", "b", "c"]),
            outputs=[{"name": "output", "parameters": {"classification": 1}}],
        ),
        {},
        400,
        "classification needs numeric scores, the output is BYTES",
    ),
    ("id-not-string", IRIS, body(id=42), {}, 400, "'id' must be a string"),
    ("parameters-not-object", IRIS, body(parameters=[1]), {}, 400, "'parameters' must be a JSON object"),
    (
        "binary-without-header",
        IRIS,
        body(tensor(data=None, parameters={"binary_data_size": 16})),
        {},
        400,
        "has no Inference-Header-Content-Length",
    ),
    (
        "header-not-number",
        IRIS,
        body(),
        {"Inference-Header-Content-Length": "ten"},
        400,
        "non-negative integer",
    ),
    (
        "header-past-body",
        IRIS,
        body(),
        {"Inference-Header-Content-Length": "99999"},
        400,
        "does not fit a body",
    ),
    (
        "missing-input",
        "/v2/models/adder/infer",
        body(tensor(name="a", shape=[1, 2], data=[1, 2])),
        {},
        400,
        "missing input 'b'; the model takes a, b",
    ),
    (
        "int8-out-of-range",
        "/v2/models/identity-int8/infer",
        body(tensor(shape=[1, 3], datatype="INT8", data=[1, 2, 300])),
        {},
        400,
        "INT8 values must lie in [-128, 127]",
    ),
    (
        "ints-for-bool",
        "/v2/models/identity-bool/infer",
        body(tensor(shape=[1, 3], datatype="BOOL", data=[1, 0, 1])),
        {},
        400,
        "BOOL data must hold booleans, got integer",
    ),
    (
        "sequence-too-long",
        "/v2/models/sequence/infer",
        body(tensor(name="input_ids", shape=[1, 9], datatype="INT64", data=[1] * 9)),
        {},
        400,
        "sequence length 9 is over the model's maximum of 8",
    ),
    ("unknown-model", "/v2/models/no-such-model/infer", body(), {}, 404, "unknown model 'no-such-model'"),
    ("unknown-version", "/v2/models/iris-like/versions/9/infer", body(), {}, 404, "has no version '9'"),
    (
        "non-numeric-version",
        "/v2/models/iris-like/versions/latest/infer",
        body(),
        {},
        404,
        "no version 'latest'",
    ),
    (
        "not-ready-model",
        "/v2/models/corrupt/infer",
        body(),
        {},
        503,
        "is not ready: onnxruntime could not load",
    ),
    ("too-large", IRIS, body(tensor(data=[0.1] * 20000)), {}, 413, "over the limit of 65536"),
    (
        "v1-both-formats",
        "/v1/models/iris-like:predict",
        {"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]},
        {},
        400,
        "exactly one of 'instances' (rows) or 'inputs' (columns)",
    ),
    ("v1-ragged", "/v1/models/iris-like:predict", {"instances": [[1, 2, 3, 4], [1]]}, {}, 400, "ragged"),
    (
        "v1-nan-string",
        "/v1/models/iris-like:predict",
        {"instances": [[1, 2, 3, "NaN"]]},
        {},
        400,
        "got string",
    ),
    ("v1-unknown-model", "/v1/models/nope:predict", {"instances": [[1]]}, {}, 404, "unknown model 'nope'"),
    ("v1-not-ready", "/v1/models/corrupt:classify", {"instances": [[1]]}, {}, 503, "is not ready"),
    (
        "v1-no-probabilities",
        "/v1/models/adder:classify",
        {"instances": [{"a": [1, 2], "b": [1, 2]}]},
        {},
        400,
        "has no 'probabilities' output",
    ),
]


@pytest.fixture(scope="module")
def limited(repo_dir: Path) -> Iterator[TestClient]:
    with make_client(repo_dir, max_body_bytes=65536) as client:
        yield client


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 25
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request(limited: TestClient, case: tuple[str, str, Any, dict[str, str], int, str]) -> None:
    _, path, payload, headers, status, fragment = case
    content = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    response = limited.post(path, content=content, headers={"Content-Type": "application/json", **headers})
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert fragment in error
    assert SECRET not in error and len(error) < 600  # says what was wrong without echoing the payload


def test_a_good_request_still_answers_right_after_all_of_them(limited: TestClient, repo_dir: Path) -> None:
    for _, path, payload, headers, _, _ in CASES:
        content = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        limited.post(path, content=content, headers=headers)
    rows = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
    response = limited.post(IRIS, json=body(tensor(shape=[2, 4], data=rows.tolist())))
    assert response.status_code == 200
    got = np.array(response.json()["outputs"][1]["data"], np.float32).reshape(2, 3)
    session = ort.InferenceSession(str(repo_dir / "iris-like" / "2" / "model.onnx"))
    np.testing.assert_allclose(got, session.run(["probabilities"], {"input": rows})[0], atol=1e-6)
    metrics = limited.get("/metrics").text
    assert (
        'recap_request_failures_total{endpoint="infer",model="iris-like",protocol="v2",reason="invalid_input",version="2"}'
        in metrics
    )
    assert (
        'recap_request_failures_total{endpoint="infer",model="",protocol="v2",reason="model_not_found",version=""}'
        in metrics
    )
    assert 'reason="payload_too_large"' in metrics and 'reason="model_not_ready"' in metrics
