"""What the routers share: settings, the repository and its model control, the metrics, the pipeline,
the drain and the V2 extensions."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from service.api.drain import Drain
from service.api.pipeline import Pipeline
from service.api.text_streams import StreamSlots
from service.metrics import Metrics
from service.runtime.lifecycle import ModelControl
from service.runtime.repository import Repository
from service.settings import Settings


@dataclass
class AppState:
    settings: Settings
    repository: Repository
    metrics: Metrics
    pipeline: Pipeline
    control: ModelControl
    drain: Drain
    # Listed by GET /v2; a router that implements an extension adds its name.
    extensions: list[str] = field(default_factory=lambda: ["classification", "binary_tensor_data"])

    @cached_property
    def stream_slots(self) -> StreamSlots:
        """Open generation streams of every protocol, against one `generate_max_streams` cap."""
        return StreamSlots(self.settings.generate_max_streams)
