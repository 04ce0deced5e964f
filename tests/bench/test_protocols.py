"""bench.protocols' arithmetic, without servers: each protocol is compared with the in-process runs
around it, and the bar is judged on the best protocol at 8,192 rows."""

from __future__ import annotations

import pytest

from bench import protocols


def results_drifting_by(factor: float) -> protocols.Results:
    """Three rounds where the machine slows by `factor` per run and REST always does half of in-process,
    gRPC a quarter, at every batch size."""
    results: protocols.Results = {}
    for rows in protocols.BATCHES:
        speed = 1000.0
        for _ in range(3):
            base_before = speed
            results.setdefault(("in process", rows), []).append(base_before)
            for name, share in (("rest", 0.5), ("grpc", 0.25)):
                speed /= factor
                results.setdefault((name, rows), []).append(share * speed)
                results.setdefault((f"{name} server cpu", rows), []).append(2.0)
                speed /= factor
                results[("in process", rows)].append(speed)
                results.setdefault((f"{name} baseline", rows), []).append((base_before + speed) / 2)
                base_before = speed
    return results


def test_a_protocol_is_compared_with_the_in_process_runs_around_it() -> None:
    steady = results_drifting_by(1.0)
    assert protocols.share(steady, "rest", 8192) == pytest.approx(0.5)
    assert protocols.share(steady, "grpc", 8192) == pytest.approx(0.25)
    # The machine slows 10 % per run: against the run before only, REST would read 0.45; the mean of the
    # runs before and after puts it within half a percent of the truth.
    drifting = results_drifting_by(1.1)
    assert protocols.share(drifting, "rest", 8192) == pytest.approx(0.5, rel=0.005)
    assert protocols.share(drifting, "grpc", 8192) == pytest.approx(0.25, rel=0.005)


def test_the_report_judges_the_best_protocol_at_the_largest_batch(capsys: pytest.CaptureFixture[str]) -> None:
    assert protocols.report(results_drifting_by(1.0), 2.0) == pytest.approx(0.5)
    assert "reaches 50% of onnxruntime in process" in capsys.readouterr().out
    low = results_drifting_by(1.0)
    low[("rest", 8192)] = [0.49 * base for base in low[("rest baseline", 8192)]]
    assert protocols.report(low, 2.0) == pytest.approx(0.49)
    assert "NOT met" in capsys.readouterr().out
