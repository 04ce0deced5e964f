"""The exporter fails loudly instead of shipping a graph with a static axis or a wrong answer."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from training.export import ExportError, ExportSpec, check_dim_params, export


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(8, 16, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0][:, -1]


def spec(exporter: str, dynamic_sequence: bool = True) -> ExportSpec:
    axes = {0: "batch", 1: "sequence"} if dynamic_sequence else {0: "batch"}
    return ExportSpec(
        ["input"], ["logits"], (torch.randn(2, 5, 8),), (torch.randn(3, 7, 8),),
        {"input": axes, "logits": {0: "batch"}}, exporter=exporter,
    )  # fmt: skip


def test_legacy_exporter_keeps_the_rnn_sequence_axis(tmp_path: Path) -> None:
    record = export(Recurrent().eval(), spec("legacy"), tmp_path / "m.onnx", {"name": "t"})
    assert record["dynamic_axes"]["input"] == ["batch", "sequence"]
    assert record["parity_max_abs_diff"] <= 1e-5


def test_a_static_sequence_axis_is_an_error(tmp_path: Path) -> None:
    static = spec("legacy", dynamic_sequence=False)
    static.check = (torch.randn(3, 5, 8),)
    export(Recurrent().eval(), static, tmp_path / "m.onnx", {})
    model = onnx.load(str(tmp_path / "m.onnx"))
    with pytest.raises(ExportError, match="static 5"):
        check_dim_params(model, {"input": {0: "batch", 1: "sequence"}})


def test_dynamo_rnn_losing_its_sequence_axis_is_caught(tmp_path: Path) -> None:
    # torch 2.13's dynamo exporter drops nn.RNN's dynamic sequence axis; export() must refuse it.
    with pytest.raises(ExportError, match="sequence"):
        export(Recurrent().eval(), spec("dynamo"), tmp_path / "m.onnx", {})


def test_parity_failure_is_an_error(tmp_path: Path) -> None:
    class Drifting(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum(dim=1) + (0.0 if torch.jit.is_tracing() or torch.compiler.is_compiling() else 1.0)

    s = ExportSpec(
        ["input"],
        ["out"],
        (torch.randn(2, 4),),
        (torch.randn(3, 4),),
        {"input": {0: "batch"}, "out": {0: "batch"}},
    )
    with pytest.raises(ExportError, match="differs"):
        export(Drifting().eval(), s, tmp_path / "d.onnx", {})


@pytest.mark.parametrize(
    ("drift", "passes"),
    [(2.0**-15, True), (0.01, False)],  # one float32 step at 256-512 (over 1e-5 absolute); 3e-5 relative
)
def test_the_parity_tolerance_is_relative_for_outputs_over_one(
    tmp_path: Path, drift: float, passes: bool
) -> None:
    """A regression's outputs in the hundreds: one float32 step apart passes a 1e-5 tolerance, a
    relative difference over it does not."""

    class Offset(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            exporting = torch.jit.is_tracing() or torch.compiler.is_compiling()
            return x.sum(dim=1) + 300.0 + (0.0 if exporting else drift)

    s = ExportSpec(
        ["input"], ["out"], (torch.randn(2, 4),), (torch.randn(3, 4),),
        {"input": {0: "batch"}, "out": {0: "batch"}}, tolerance=1e-5,
    )  # fmt: skip
    if passes:
        record = export(Offset().eval(), s, tmp_path / "o.onnx", {})
        assert record["parity_max_abs_diff"] > 1e-5  # what an absolute tolerance refused
    else:
        with pytest.raises(ExportError, match="differs"):
            export(Offset().eval(), s, tmp_path / "o.onnx", {})
