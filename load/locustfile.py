"""Locust users for recap-serve: every protocol a client speaks, every answer checked, not only its status.

    locust -f load/locustfile.py --headless -u 8 -r 4 -t 20s --host http://127.0.0.1:8000
    locust -f load/locustfile.py --tags v2 v1          # only the tabular protocols
    locust -f load/locustfile.py --exclude-tags generation

Tags: v2, infer, classification, v1, predict, classify, metadata, generation, generate, stream, gan,
openai, completions, completions_stream.
Environment: RECAP_LOAD_MODELS (comma-separated models to hit; default all), RECAP_LOAD_MAX_ROWS (rows
per request, default 8), RECAP_LOAD_WAIT_MAX (seconds between a user's requests, default 0.05),
RECAP_LOAD_PAYLOADS (payload folder, default load/payloads), RECAP_API_KEY (or RECAP_API_KEY_FILE, a file
holding it: an `inference` key, sent as `Authorization: Bearer`). load/README.md explains the results.
"""

from __future__ import annotations

import json
import logging
import os
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, events, tag, task
from locust.env import Environment
from locust.runners import MasterRunner

from load.catalog import TabularModel, TextScenario, load_models, load_text_scenarios
from load.checks import (
    CheckError,
    check_classification_strings,
    check_completion,
    check_completion_stream,
    check_finite,
    check_generated,
    check_probability_rows,
    check_ranked_labels,
    check_stream,
    check_v2_tensor,
    expect,
    outputs_by_name,
    png_size,
)

MAX_ROWS = int(os.environ.get("RECAP_LOAD_MAX_ROWS", "8"))
WAIT_MAX = float(os.environ.get("RECAP_LOAD_WAIT_MAX", "0.05"))
TOP_K = 3
GAN_MODEL = "digits-gan-generator"

# RECAP_LOAD_MODELS=a,b restricts every scenario to those models (default: every model with a payload).
ONLY = {name for name in os.environ.get("RECAP_LOAD_MODELS", "").split(",") if name}
MODELS = [m for m in load_models() if not ONLY or m.name in ONLY]
CLASSIFIERS = [m for m in MODELS if m.is_classifier and m.labels]  # labels to check against
TEXT = [scenario for scenario in load_text_scenarios() if not ONLY or scenario.model in ONLY]
log = logging.getLogger("recap.load")


def _api_key() -> str | None:
    key = os.environ.get("RECAP_API_KEY")
    key_file = os.environ.get("RECAP_API_KEY_FILE")
    if not key and key_file:
        key = Path(key_file).read_text().strip()
    return key or None


_KEY = _api_key()
HEADERS = {"Authorization": f"Bearer {_KEY}"} if _KEY else None


class RecapUser(FastHttpUser):
    """One API client. Task weights mirror a plausible mix: mostly V2 inference, some V1, some generation."""

    wait_time = between(0.0, WAIT_MAX)

    def on_start(self) -> None:
        self.rng = random.Random()

    def _call(
        self,
        method: str,
        path: str,
        name: str,
        check: Callable[[Any], object],
        body: dict[str, Any] | None = None,
    ) -> None:
        """One request; `check` gets the response and raises CheckError when its content is wrong."""
        request = self.client.request(
            method, path, json=body, name=name, catch_response=True, headers=HEADERS
        )
        with request as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                return
            try:
                check(response)
                response.success()
            except (CheckError, ValueError, KeyError, TypeError) as exc:
                response.failure(f"{type(exc).__name__}: {exc}"[:300])

    # -- V2, Open Inference Protocol ----------------------------------------------------------------

    @tag("v2", "infer")
    @task(6)
    def v2_infer(self) -> None:
        model = self.rng.choice(MODELS)
        rows = model.sample(self.rng, MAX_ROWS)
        request_id = uuid.uuid4().hex[:16]
        body = {
            "id": request_id,
            "inputs": [
                {
                    "name": model.input_name,
                    "datatype": "FP32",
                    "shape": [len(rows), *model.row_shape],
                    "data": model.flat(rows),
                }
            ],
            "outputs": [{"name": model.output}],
        }

        def check(response: Any) -> None:
            outputs = outputs_by_name(response.json(), model=model.name, request_id=request_id)
            expect(model.output in outputs, f"no {model.output!r} output in {sorted(outputs)}")
            values = check_v2_tensor(outputs[model.output], rows=len(rows), width=model.width)
            if model.is_classifier:
                check_probability_rows(values, softmax=model.softmax, what=model.name)

        self._call("POST", f"/v2/models/{model.name}/infer", f"v2 infer {model.name}", check, body)

    @tag("v2", "classification")
    @task(2)
    def v2_classification(self) -> None:
        model = self.rng.choice(CLASSIFIERS)
        rows = model.sample(self.rng, MAX_ROWS)
        body = {
            "inputs": [
                {
                    "name": model.input_name,
                    "datatype": "FP32",
                    "shape": [len(rows), *model.row_shape],
                    "data": model.flat(rows),
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"classification": TOP_K}}],
        }

        def check(response: Any) -> None:
            outputs = outputs_by_name(response.json(), model=model.name, request_id=None)
            expect("probabilities" in outputs, f"no probabilities output in {sorted(outputs)}")
            out = outputs["probabilities"]
            expect(out.get("datatype") == "BYTES", f"classification datatype {out.get('datatype')!r}")
            check_classification_strings(out["data"], rows=len(rows), labels=model.labels, top_k=TOP_K)

        self._call("POST", f"/v2/models/{model.name}/infer", f"v2 classify {model.name}", check, body)

    # -- V1, TF-Serving style -----------------------------------------------------------------------

    @tag("v1", "predict")
    @task(3)
    def v1_predict(self) -> None:
        model = self.rng.choice(MODELS)
        rows = model.sample(self.rng, MAX_ROWS)

        def check(response: Any) -> None:
            predictions = response.json().get("predictions")
            expect(isinstance(predictions, list), "answer has no predictions list")
            expect(len(predictions) == len(rows), f"{len(predictions)} predictions for {len(rows)} instances")
            for prediction in predictions:
                _check_v1_prediction(model, prediction)

        self._call(
            "POST", f"/v1/models/{model.name}:predict", f"v1 predict {model.name}", check, {"instances": rows}
        )

    @tag("v1", "classify")
    @task(2)
    def v1_classify(self) -> None:
        model = self.rng.choice(CLASSIFIERS)
        rows = model.sample(self.rng, MAX_ROWS)

        def check(response: Any) -> None:
            results = response.json().get("results")
            expect(isinstance(results, list), "answer has no results list")
            expect(len(results) == len(rows), f"{len(results)} results for {len(rows)} instances")
            for result in results:
                check_ranked_labels(result, labels=model.labels)

        self._call(
            "POST",
            f"/v1/models/{model.name}:classify",
            f"v1 classify {model.name}",
            check,
            {"instances": rows},
        )

    @tag("v1", "metadata")
    @task(1)
    def v1_status(self) -> None:
        model = self.rng.choice(MODELS)

        def check(response: Any) -> None:
            statuses = response.json().get("model_version_status")
            expect(isinstance(statuses, list) and len(statuses) > 0, "no model_version_status")
            expect(any(s.get("state") == "AVAILABLE" for s in statuses), f"no AVAILABLE version: {statuses}")

        self._call("GET", f"/v1/models/{model.name}", "v1 status [model]", check)

    # -- Generation ---------------------------------------------------------------------------------

    @tag("generation", "generate")
    @task(1)
    def generate(self) -> None:
        scenario, prompt, body = self._generation_request()
        self._call(
            "POST",
            f"/v2/models/{scenario.model}/generate",
            f"generate {scenario.model}",
            lambda response: check_generated(response.json(), scenario=scenario, prompt=prompt),
            body,
        )

    @tag("generation", "stream")
    @task(1)
    def generate_stream(self) -> None:
        scenario, prompt, body = self._generation_request()
        self._call(
            "POST",
            f"/v2/models/{scenario.model}/generate_stream",
            f"generate_stream {scenario.model}",
            lambda response: check_stream(response.text or "", scenario=scenario, prompt=prompt),
            body,
        )

    @tag("generation", "gan")
    @task(1)
    def gan_samples(self) -> None:
        count, seed = self.rng.choice([4, 9, 16]), self.rng.randrange(1_000_000)

        def check(response: Any) -> None:
            kind = response.headers.get("content-type", "")
            expect(kind.startswith("image/png"), f"content-type {kind!r}, expected image/png")
            png_size(response.content)

        self._call(
            "GET", f"/v1/models/{GAN_MODEL}/samples.png?count={count}&seed={seed}", "gan samples.png", check
        )

    # -- OpenAI completions (the text models) -------------------------------------------------------

    @tag("generation", "openai", "completions")
    @task(1)
    def openai_completions(self) -> None:
        scenario, prompt, body = self._completion_request()
        self._call(
            "POST",
            "/openai/v1/completions",
            f"openai completions {scenario.model}",
            lambda response: check_completion(response.json(), scenario=scenario, prompt=prompt),
            body,
        )

    @tag("generation", "openai", "completions_stream")
    @task(1)
    def openai_completions_stream(self) -> None:
        scenario, prompt, body = self._completion_request()
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        self._call(
            "POST",
            "/openai/v1/completions",
            f"openai completions_stream {scenario.model}",
            lambda response: check_completion_stream(response.text or "", scenario=scenario, prompt=prompt),
            body,
        )

    def _completion_request(self) -> tuple[TextScenario, str, dict[str, Any]]:
        """The generate scenarios' request in OpenAI's fields (temperature and max_tokens always sent:
        OpenAI's defaults are not generate's)."""
        scenario, prompt, generate = self._generation_request()
        return scenario, prompt, {"model": scenario.model, "prompt": prompt, **generate["parameters"]}

    def _generation_request(self) -> tuple[TextScenario, str, dict[str, Any]]:
        scenario = self.rng.choice(TEXT)
        prompt = self.rng.choice(scenario.prompts)
        parameters = {
            "max_tokens": scenario.max_tokens,
            "temperature": scenario.temperature,
            "seed": self.rng.randrange(1_000_000),
        }
        return scenario, prompt, {"text_input": prompt, "parameters": parameters}


# A scenario with nothing to hit under RECAP_LOAD_MODELS is dropped (before tag filtering), not run empty.
_POOLS = {
    RecapUser.v2_infer: MODELS,
    RecapUser.v1_predict: MODELS,
    RecapUser.v1_status: MODELS,
    RecapUser.v2_classification: CLASSIFIERS,
    RecapUser.v1_classify: CLASSIFIERS,
    RecapUser.generate: TEXT,
    RecapUser.generate_stream: TEXT,
    RecapUser.openai_completions: TEXT,
    RecapUser.openai_completions_stream: TEXT,
    RecapUser.gan_samples: [GAN_MODEL] if not ONLY or GAN_MODEL in ONLY else [],
}
_dropped = sorted({task.__name__ for task, pool in _POOLS.items() if not pool})
if _dropped:
    log.warning("RECAP_LOAD_MODELS=%s leaves nothing for: %s", ",".join(sorted(ONLY)), ", ".join(_dropped))
    RecapUser.tasks = [t for t in RecapUser.tasks if getattr(t, "__name__", "") not in _dropped]


def _check_v1_prediction(model: TabularModel, prediction: Any) -> None:
    """One V1 prediction: a number (regression/binary), a probability list, or a dict of named outputs."""
    if isinstance(prediction, dict):
        expect(model.output in prediction, f"prediction has no {model.output!r}: {sorted(prediction)}")
        prediction = prediction[model.output]
    values = prediction if isinstance(prediction, list) else [prediction]
    expect(len(values) == model.width, f"prediction of {len(values)} values, expected {model.width}")
    if model.is_classifier:
        check_probability_rows([values], softmax=model.softmax, what=model.name)
    else:
        check_finite(values, what=model.name)  # a regression value has no bounds


# -- Distributed runs: a per-worker breakdown the master writes next to its CSV files ------------------

_worker_requests: dict[str, dict[str, int]] = {}


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    if not isinstance(environment.runner, MasterRunner):
        return

    def on_worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
        total = data.get("stats_total") or {}
        counts = _worker_requests.setdefault(client_id, {"requests": 0, "failures": 0})
        counts["requests"] += int(total.get("num_requests") or 0)
        counts["failures"] += int(total.get("num_failures") or 0)

    def on_quitting(environment: Environment, **_: Any) -> None:
        prefix = getattr(environment.parsed_options, "csv_prefix", None)
        if prefix:
            path = Path(f"{prefix}_workers.json")
            path.write_text(json.dumps({"workers": _worker_requests}, indent=2, sort_keys=True) + "\n")
            log.info("per-worker requests written to %s", path)

    environment.events.worker_report.add_listener(on_worker_report)
    environment.events.quitting.add_listener(on_quitting)
