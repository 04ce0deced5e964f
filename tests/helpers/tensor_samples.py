"""Two values of every V2 datatype, as JSON sends them (shared by the tensor and V2 route tests)."""

from __future__ import annotations

from typing import Any

SAMPLES: dict[str, list[Any]] = {
    "BOOL": [True, False, True, True],
    "INT8": [-128, 0, 5, 127],
    "INT16": [-32768, 1, 2, 32767],
    "INT32": [-(2**31), 1, 2, 2**31 - 1],
    "INT64": [-(2**63), 1, 2, 2**63 - 1],
    "UINT8": [0, 1, 2, 255],
    "UINT16": [0, 1, 2, 65535],
    "UINT32": [0, 1, 2, 2**32 - 1],
    "UINT64": [0, 1, 2, 2**64 - 1],
    "FP16": [0.5, -1.0, 2.0, 65504.0],
    "FP32": [0.1, -1.5, 3.0, 1e30],
    "FP64": [0.1, -1.5, 3.0, 1e300],
    "BYTES": ["a", "", "héllo", "z"],
}
