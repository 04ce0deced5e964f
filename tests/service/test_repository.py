"""service.runtime.repository and session: scanning, bare/corrupt/tampered models, providers, run()."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.errors import InvalidInputError, ModelNotFoundError, ModelNotReadyError
from service.metrics import Metrics
from service.runtime import session as session_module
from service.runtime.model import LoadedModel
from service.runtime.repository import Repository
from service.runtime.session import SessionConfig
from service.runtime.tensors import DATATYPES
from tests.helpers.onnx_models import SEQUENCE_TOKENIZER, classifier, sequence_model, write_model


def load(root: Path, **config: object) -> Repository:
    repository = Repository(root, SessionConfig(**config), Metrics())  # type: ignore[arg-type]
    repository.load_all()
    return repository


@pytest.fixture(scope="module")
def repository(repo_dir: Path) -> Repository:
    return load(repo_dir)


def test_every_version_loads_and_the_highest_is_the_default(repository: Repository) -> None:
    assert [m.version for m in repository.versions("iris-like")] == [1, 2]
    assert repository.get("iris-like").version == 2
    assert repository.get("iris-like", "1").version == 1
    assert repository.get("iris-like").labels == ["setosa", "versicolor", "virginica"]
    assert repository.get("iris-like").batch_limit == 8


def test_unknown_model_and_version(repository: Repository) -> None:
    with pytest.raises(ModelNotFoundError, match="unknown model 'nope'"):
        repository.get("nope")
    with pytest.raises(ModelNotFoundError, match="has no version '7'; versions: 1, 2"):
        repository.get("iris-like", "7")


def test_bare_model_is_served_from_the_graph(repository: Repository) -> None:
    adder = repository.get("adder")
    assert adder.ready and not adder.manifest.has_file
    assert [s.as_metadata() for s in adder.inputs] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "b", "datatype": "FP32", "shape": [-1, 2]},
    ]
    (result,) = adder.run(["sum"], {"a": np.ones((1, 2), np.float32), "b": np.ones((1, 2), np.float32)})
    np.testing.assert_array_equal(result, [[2, 2]])


def test_broken_models_are_not_ready_with_a_reason(repo_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        repository = load(repo_dir)
    reasons = {name: repository.get(name).reason or "" for name in ("corrupt", "tampered", "unsupported")}
    assert "could not load model.onnx" in reasons["corrupt"]
    assert "INVALID_PROTOBUF" in reasons["corrupt"]
    assert "sha256 mismatch" in reasons["tampered"]
    assert "NoSuchOp" in reasons["unsupported"] or "recap.unknown" in reasons["unsupported"]
    for name, reason in reasons.items():
        assert str(repo_dir) not in reason  # no server paths in what clients see
        assert f"{name} version 1 failed to load" in caplog.text
        with pytest.raises(ModelNotReadyError, match="is not ready"):
            repository.get(name).require_session()
    assert repository.get("iris-like").ready  # the others serve


def test_bad_model_json_makes_the_model_not_ready(tmp_path: Path) -> None:
    write_model(tmp_path, "bad-json", classifier(2, 2))
    (tmp_path / "bad-json" / "1" / "model.json").write_text("{not json")
    write_model(tmp_path, "bad-task", classifier(2, 2), manifest={"task": "astrology"})
    write_model(tmp_path, "ok", classifier(2, 2), manifest={"task": "multiclass_classification"})
    (tmp_path / "Not_A_Name").mkdir()
    (tmp_path / "no-versions").mkdir()
    repository = load(tmp_path)
    assert "not valid JSON" in (repository.get("bad-json").reason or "")
    assert "unknown task 'astrology'" in (repository.get("bad-task").reason or "")
    assert repository.get("ok").ready
    assert {m.name for m in repository.models()} == {"bad-json", "bad-task", "ok"}


def checked(model: LoadedModel, feeds: dict[str, np.ndarray]) -> None:
    """The checks every protocol makes, in the order they make them (see service.runtime.model)."""
    for name, array in feeds.items():
        spec = model.input_spec(name)
        model.check_input(spec, next(k for k, v in DATATYPES.items() if v == array.dtype), array.shape)
    model.check_complete(feeds)


def test_a_text_model_that_cannot_generate_is_not_ready_from_the_start(tmp_path: Path) -> None:
    text = {"task": "language_model", "max_sequence_length": 8}
    write_model(tmp_path, "no-tokenizer", sequence_model(), manifest=text)
    write_model(tmp_path, "bad-vocab", sequence_model(), manifest=text | {"tokenizer": {"vocab": "abc"}})
    write_model(tmp_path, "good", sequence_model(), manifest=text | {"tokenizer": SEQUENCE_TOKENIZER})
    repository = load(tmp_path)
    assert repository.get("no-tokenizer").reason == "cannot generate text: model.json has no tokenizer"
    assert "tokenizer.vocab must be a list of strings" in (repository.get("bad-vocab").reason or "")
    good = repository.get("good")
    assert good.ready and good.text is not None and good.class_labels == list("abcdefghijklmnop")


def test_the_input_checks_every_protocol_makes(repository: Repository) -> None:
    model = repository.get("iris-like", "1")
    good = np.zeros((2, 4), np.float32)
    checked(model, {"input": good})
    (probabilities,) = model.run(["probabilities"], {"input": good})
    assert probabilities.shape == (2, 3)
    with pytest.raises(InvalidInputError, match="missing input 'input'; the model takes input"):
        checked(model, {})
    with pytest.raises(InvalidInputError, match="unknown input 'x'; the model takes input"):
        checked(model, {"input": good, "x": good})
    with pytest.raises(InvalidInputError, match="datatype FP64 does not match the model's FP32"):
        checked(model, {"input": good.astype(np.float64)})
    with pytest.raises(InvalidInputError, match="axis 1 must be 4"):
        checked(model, {"input": np.zeros((2, 5), np.float32)})
    with pytest.raises(InvalidInputError, match="unknown output 'nope'; the model's outputs are logits"):
        model.output_spec("nope")
    with pytest.raises(InvalidInputError, match="unknown output a missing name"):
        model.output_spec(None)
    with pytest.raises(InvalidInputError, match="over the model's limit of 8"):
        checked(repository.get("iris-like"), {"input": np.zeros((9, 4), np.float32)})
    with pytest.raises(InvalidInputError, match="sequence length 9 is over the model's maximum of 8"):
        checked(repository.get("sequence"), {"input_ids": np.zeros((1, 9), np.int64)})


def test_run_records_compute_metrics(repo_dir: Path) -> None:
    repository = load(repo_dir)
    model = repository.get("iris-like", "1")
    model.run(["probabilities"], {"input": np.zeros((3, 4), np.float32)})
    registry = repository.metrics.registry
    labels = {"model": "iris-like", "version": "1"}
    assert registry.get_sample_value("recap_inference_rows_total", labels) == 3
    assert registry.get_sample_value("recap_inference_duration_seconds_count", labels) == 1
    assert registry.get_sample_value("recap_model_ready", labels) == 1
    assert registry.get_sample_value("recap_model_ready", {"model": "corrupt", "version": "1"}) == 0


HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(HAS_CUDA, reason="this checks the behaviour without a GPU build of onnxruntime")
def test_cuda_without_gpu_strict_is_not_ready(repo_dir: Path) -> None:
    repository = load(repo_dir, providers=("cuda", "cpu"), strict_providers=True)
    model = repository.get("iris-like")
    assert not model.ready
    assert "execution provider cuda (CUDAExecutionProvider) was requested" in (model.reason or "")
    assert "strict providers" in (model.reason or "")


@pytest.mark.skipif(HAS_CUDA, reason="this checks the behaviour without a GPU build of onnxruntime")
def test_cuda_without_gpu_falls_back_to_cpu_and_logs_once(
    repo_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "_fallbacks_logged", set())
    with caplog.at_level(logging.WARNING, logger="service.runtime.session"):
        repository = load(repo_dir, providers=("cuda", "cpu"))
    model = repository.get("iris-like")
    assert model.ready and model.providers == ["CPUExecutionProvider"]
    fallback_lines = [r for r in caplog.records if "CUDAExecutionProvider" in r.getMessage()]
    assert len(fallback_lines) == 1  # once for the whole repository, not once per model
    assert "falling back" in fallback_lines[0].getMessage()
