"""Which Locust scenarios a given server can take: every one, minus those whose route or model is missing.

A missing part of the API (generation comes in a later issue) is excluded by tag with a printed reason,
not counted as a load-test failure; a separate test skips with the same reason so the gap stays visible.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from load.catalog import load_models, load_text_scenarios
from tests.helpers.servers import http_get

GAN_MODEL = "digits-gan-generator"
# tag -> the request-name prefix its task reports in Locust's stats
REQUEST_NAMES = {
    "infer": "v2 infer ",
    "classification": "v2 classify ",
    "predict": "v1 predict ",
    "classify": "v1 classify ",
    "metadata": "v1 status ",
    "generate": "generate ",
    "stream": "generate_stream ",
    "gan": "gan samples.png",
    "completions": "openai completions ",
    "completions_stream": "openai completions_stream ",
}
# tag -> the route (as FastAPI's openapi.json spells it) the tag needs
ROUTES = {
    "generate": "/v2/models/{model_name}/generate",
    "stream": "/v2/models/{model_name}/generate_stream",
    "gan": "/v1/models/{model_name}/samples.png",
    "completions": "/openai/v1/completions",
    "completions_stream": "/openai/v1/completions",
}


@dataclass
class Plan:
    models: list[str]  # RECAP_LOAD_MODELS
    excluded_tags: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def tags(self) -> list[str]:
        return [t for t in REQUEST_NAMES if t not in self.excluded_tags]

    def exclude(self, tag: str, reason: str) -> None:
        if tag not in self.excluded_tags:
            self.excluded_tags.append(tag)
            self.reasons.append(f"{tag}: {reason}")


def served_models(url: str) -> set[str]:
    import urllib.request  # noqa: PLC0415  (POST: http_get only GETs)

    request = urllib.request.Request(f"{url}/v2/repository/index", data=b"{}", method="POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        index = json.loads(response.read())
    return {m["name"] for m in index if m.get("state", "READY") == "READY"}


def plan_for(url: str) -> Plan:
    served = served_models(url)
    status, body = http_get(f"{url}/openapi.json")
    paths = set(json.loads(body)["paths"]) if status == 200 else set()
    tabular = [m.name for m in load_models()]
    text = sorted(scenario.model for scenario in load_text_scenarios())
    plan = Plan(models=sorted(served & {*tabular, *text, GAN_MODEL}))
    missing_tabular = sorted(set(tabular) - served)
    if missing_tabular:
        plan.reasons.append(f"models not in the repository, not load-tested: {missing_tabular}")
    for tag, route in ROUTES.items():
        if route not in paths:
            plan.exclude(tag, f"the server has no {route} route yet")
    if not served & set(text):
        for tag in ("generate", "stream", "completions", "completions_stream"):
            plan.exclude(tag, f"no text model ({', '.join(text)}) is served")
    if GAN_MODEL not in served:
        plan.exclude("gan", f"{GAN_MODEL} is not served")
    return plan


def stats_rows(csv_path: Path) -> dict[str, dict[str, str]]:
    """Locust's *_stats.csv keyed by request name ("Aggregated" for the total)."""
    with csv_path.open(newline="") as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}
