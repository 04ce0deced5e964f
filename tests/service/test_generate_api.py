"""The generate, generate_stream and samples.png routes in process, on tiny ONNX models (no zoo needed)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import orjson
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.main import create_app
from service.settings import Settings
from tests.helpers.onnx_models import LATENT, generator_model
from tests.helpers.text_models import SPECIALS, VOCAB, bigram_lm_model, copy_seq2seq_model, cycle_table


def save(root: Path, name: str, model: onnx.ModelProto, manifest: dict[str, Any]) -> None:
    folder = root / name / "1"
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    (folder / "model.json").write_bytes(orjson.dumps({"name": name, "version": 1, **manifest}))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("generate-models")
    tokenizer = {"type": "char", "vocab": VOCAB, "special_tokens": SPECIALS}
    random_table = np.random.default_rng(0).normal(size=(len(VOCAB), len(VOCAB))).astype(np.float32)
    text = {"max_sequence_length": 8, "tokenizer": tokenizer}
    save(root, "cycle-lm", bigram_lm_model(cycle_table()), {"task": "language_model", **text})
    save(root, "random-lm", bigram_lm_model(random_table), {"task": "language_model", **text})
    save(root, "copy", copy_seq2seq_model(), {"task": "seq2seq", **text})
    gan = {"task": "generator", "latent_dim": LATENT, "image_shape": [8, 8], "pixel_range": [0, 16]}
    save(root, "gan", generator_model(), gan)
    return root


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[TestClient]:
    settings = Settings(
        model_repository=repo,
        generate_max_tokens=40,
        generate_default_max_tokens=10,
        generate_max_prompt_length=20,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def generate(client: TestClient, model: str, text: str, **parameters: Any) -> Any:
    response = client.post(
        f"/v2/models/{model}/generate", json={"text_input": text, "parameters": parameters}
    )
    assert response.status_code == 200, response.text
    return response.json()


def stream(client: TestClient, model: str, text: str, **parameters: Any) -> list[dict[str, Any]]:
    body = {"text_input": text, "parameters": parameters}
    with client.stream("POST", f"/v2/models/{model}/generate_stream", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    return [orjson.loads(line.removeprefix("data: ")) for line in lines]


def test_generate_answers_triton_style(client: TestClient) -> None:
    answer = generate(client, "cycle-lm", "ab", max_tokens=6)
    assert answer == {
        "model_name": "cycle-lm",
        "model_version": "1",
        "text_output": "cd abc",
        "finish_reason": "length",
        "tokens": 6,
    }
    versioned = client.post("/v2/models/cycle-lm/versions/1/generate", json={"text_input": "ab"})
    assert versioned.json()["text_output"].startswith("cd abc")


def test_seq2seq_generates_until_eos(client: TestClient) -> None:
    answer = generate(client, "copy", "dab c")
    assert (answer["text_output"], answer["finish_reason"]) == ("dab c", "eos")


def test_stream_has_one_event_per_token_and_a_final_event(client: TestClient) -> None:
    events = stream(client, "cycle-lm", "a", max_tokens=5)
    assert [e["text_output"] for e in events] == ["b", "c", "d", " ", "a", ""]
    assert events[-1]["finish_reason"] == "length"
    assert all("finish_reason" not in e for e in events[:-1])
    assert {e["model_name"] for e in events} == {"cycle-lm"}


def test_stream_equals_generate_for_a_seed_with_stop_strings(client: TestClient) -> None:
    parameters = {"max_tokens": 40, "temperature": 1.0, "top_p": 0.9, "seed": 11, "stop": ["dd", "ca"]}
    events = stream(client, "random-lm", "abc", **parameters)
    answer = generate(client, "random-lm", "abc", **parameters)
    assert "".join(e["text_output"] for e in events) == answer["text_output"]
    assert events[-1]["finish_reason"] == answer["finish_reason"]


def test_seeds_reproduce_and_differ(client: TestClient) -> None:
    def text(seed: int) -> str:
        return str(
            generate(client, "random-lm", "a", max_tokens=30, temperature=1.0, seed=seed)["text_output"]
        )

    assert text(3) == text(3)
    assert len({text(seed) for seed in range(4)}) > 1


# (model, body, status, message fragment)
BAD_GENERATE: list[tuple[str, dict[str, Any], int, str]] = [
    ("cycle-lm", {"text_input": "abz"}, 400, "'z' at position 2"),
    ("cycle-lm", {"text_input": ""}, 400, "text_input is empty"),
    ("cycle-lm", {"text_input": "a" * 21}, 400, "accepts at most 20"),
    (
        "cycle-lm",
        {"text_input": "a", "parameters": {"max_tokens": 41}},
        400,
        "over this server's cap of 40",
    ),
    ("cycle-lm", {"text_input": "a", "parameters": {"max_tokens": 0}}, 400, "max_tokens must be >= 1"),
    ("cycle-lm", {"text_input": "a", "parameters": {"temperature": "hot"}}, 400, "must be a number"),
    ("cycle-lm", {"text_input": "a", "parameters": {"top_k": 1.5}}, 400, "'top_k' must be an integer"),
    ("cycle-lm", {"text_input": "a", "parameters": {"stop": [1]}}, 400, "array of strings"),
    ("cycle-lm", {"text_input": "a", "parameters": {"temprature": 1}}, 400, "unknown parameter"),
    ("cycle-lm", {"text_input": 5}, 400, "'text_input' must be a string"),
    ("cycle-lm", {"prompt": "a"}, 400, "unknown field 'prompt'"),
    ("copy", {"text_input": "abcdabcda"}, 400, "encoder takes at most 8"),
    ("gan", {"text_input": "a"}, 400, "does not generate text"),
    ("nope", {"text_input": "a"}, 404, "unknown model"),
]


@pytest.mark.parametrize("case", BAD_GENERATE, ids=[f"{c[0]}-{c[3][:24]}" for c in BAD_GENERATE])
@pytest.mark.parametrize("route", ["generate", "generate_stream"])
def test_bad_generate_requests(
    client: TestClient, route: str, case: tuple[str, dict[str, Any], int, str]
) -> None:
    model, body, status, message = case
    response = client.post(f"/v2/models/{model}/{route}", json=body)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_samples_png_is_a_grid_of_the_generator_images(client: TestClient) -> None:
    response = client.get("/v1/models/gan/samples.png", params={"count": 6, "seed": 7, "scale": 2})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as image:
        sheet = np.asarray(image)
    # 6 images -> 2 rows x 3 columns of 16x16 cells with 4-pixel gutters.
    assert sheet.shape == (2 * 16 + 3 * 4, 3 * 16 + 4 * 4)
    again = client.get("/v1/models/gan/samples.png", params={"count": 6, "seed": 7, "scale": 2})
    other = client.get("/v1/models/gan/samples.png", params={"count": 6, "seed": 8, "scale": 2})
    assert again.content == response.content != other.content


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/v1/models/gan/samples.png", {"count": 0}, 400, "count"),
        ("/v1/models/gan/samples.png", {"count": 257}, 400, "over this server's limit of 256"),
        ("/v1/models/gan/samples.png", {"seed": -1}, 400, "seed"),
        ("/v1/models/cycle-lm/samples.png", {}, 400, "not an image generator"),
        ("/v1/models/nope/samples.png", {}, 404, "unknown model"),
    ],
)
def test_bad_samples_requests(
    client: TestClient, path: str, params: dict[str, Any], status: int, message: str
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_stream_cap_answers_429(repo: Path) -> None:
    settings = Settings(model_repository=repo, generate_max_streams=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as capped:
        body = {"text_input": "a", "parameters": {"max_tokens": 3}}
        with capped.stream("POST", "/v2/models/cycle-lm/generate_stream", json=body) as first:
            assert first.status_code == 200
            second = capped.post("/v2/models/cycle-lm/generate_stream", json=body)
            assert second.status_code == 429 and second.headers["retry-after"] == "1"
            assert "limit" in second.json()["error"]
            first.read()
        # The slot is free again once the first stream ended.
        assert capped.post("/v2/models/cycle-lm/generate_stream", json=body).status_code == 200


def test_server_metadata_lists_generate(client: TestClient) -> None:
    assert "generate" in client.get("/v2").json()["extensions"]
