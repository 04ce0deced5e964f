"""service.runtime.tensors: V2 JSON and binary tensors <-> numpy, with their checks."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import InvalidInputError
from service.runtime.tensors import (
    DATATYPES,
    binary_to_numpy,
    cast_for_model,
    json_to_numpy,
    numpy_to_binary,
    numpy_to_json_data,
)
from tests.helpers.tensor_samples import SAMPLES


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_json_round_trip_every_datatype(datatype: str) -> None:
    array = json_to_numpy("x", datatype, [2, 2], SAMPLES[datatype])
    assert array.shape == (2, 2)
    assert array.dtype == DATATYPES[datatype]
    back = numpy_to_json_data(array)
    assert list(back.tolist() if isinstance(back, np.ndarray) else back) == list(
        np.array(SAMPLES[datatype], dtype=DATATYPES[datatype]).tolist()
    )


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_binary_round_trip_every_datatype(datatype: str) -> None:
    array = json_to_numpy("x", datatype, [4], SAMPLES[datatype])
    raw = numpy_to_binary(array)
    again = binary_to_numpy("x", datatype, [4], raw)
    assert again.tolist() == array.tolist()


def test_nested_data_follows_the_shape() -> None:
    nested = json_to_numpy("x", "FP32", [2, 3], [[1, 2, 3], [4, 5, 6]])
    flat = json_to_numpy("x", "FP32", [2, 3], [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(nested, flat)
    with pytest.raises(InvalidInputError, match="level 1 has 2 values, expected 3"):
        json_to_numpy("x", "FP32", [2, 3], [[1, 2, 3], [4, 5]])


@pytest.mark.parametrize(
    ("datatype", "data", "fragment"),
    [
        ("FP32", [1.0, "2"], "must hold numbers, got string"),
        ("FP32", [1.0, None], "got null"),
        ("FP32", [1.0, True], "got boolean"),
        ("FP32", [1e39, 1.0], "finite numbers"),
        ("FP16", [70000.0, 1.0], "finite numbers"),
        ("INT8", [1, 128], "must lie in [-128, 127]"),
        ("UINT8", [-1, 2], "must lie in [0, 255]"),
        ("INT64", [1, 2.5], "must hold integers, got number"),
        ("BOOL", [1, 0], "must hold booleans, got integer"),
        ("BYTES", ["a", 1], "must hold strings, got integer"),
        ("FP32", [1.0], "needs 2 values, got 1"),
        ("FLOAT", [1.0, 2.0], "unknown datatype"),
    ],
)
def test_bad_json_tensors(datatype: str, data: list[object], fragment: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        json_to_numpy("x", datatype, [2], data)
    assert fragment in info.value.message


def test_binary_size_and_nan_checks() -> None:
    with pytest.raises(InvalidInputError, match="needs 8 bytes"):
        binary_to_numpy("x", "FP32", [2], b"\0" * 7)
    with pytest.raises(InvalidInputError, match="finite"):
        binary_to_numpy("x", "FP32", [1], np.array([np.nan], np.float32).tobytes())
    with pytest.raises(InvalidInputError, match="length prefix"):
        binary_to_numpy("x", "BYTES", [1], b"\1\0")


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("position", [0, 7, 4095, -1])
def test_every_non_finite_value_is_refused_wherever_it_is(datatype: str, bad: float, position: int) -> None:
    """The binary check sums squares first (one pass): NaN, +Inf and -Inf anywhere still come out."""
    values = np.random.default_rng(0).normal(size=8192).astype(DATATYPES[datatype])
    values[position] = bad
    with pytest.raises(InvalidInputError, match="finite"):
        binary_to_numpy("x", datatype, [8192], values.tobytes())


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_finite_values_whose_squares_overflow_are_accepted(datatype: str) -> None:
    """Near the type's range the sum of squares overflows; the exact check then lets them through."""
    big = np.finfo(DATATYPES[datatype]).max
    values = np.ones(8192, dtype=DATATYPES[datatype])
    values[[3, 5000]] = big, -big
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.dot(values, values))
    np.testing.assert_array_equal(binary_to_numpy("x", datatype, [8192], values.tobytes()), values)


def test_v1_values_cast_to_the_model_datatype() -> None:
    assert cast_for_model("x", [[1, 2], [3, 4]], "FP32").dtype == np.float32
    with pytest.raises(InvalidInputError, match="ragged"):
        cast_for_model("x", [[1, 2], [3]], "FP32")


def test_aligned_binary_data_is_used_in_place() -> None:
    """The whole-body reader's buffer and a bytes object (a gRPC field: read-only) are not copied; data at
    an odd offset is copied into an aligned array of its own."""
    values = np.arange(12, dtype=np.float32)
    storage = np.zeros(64 + values.nbytes + 1, dtype=np.uint8)
    start = -storage.ctypes.data % 64
    storage[start : start + values.nbytes] = values.view(np.uint8)
    aligned = memoryview(storage.data)[start : start + values.nbytes]
    in_place = binary_to_numpy("x", "FP32", [3, 4], aligned)
    assert np.shares_memory(in_place, storage)
    np.testing.assert_array_equal(in_place.ravel(), values)
    odd = memoryview(storage.data)[start + 1 : start + 1 + values.nbytes]
    copied = binary_to_numpy("x", "FP32", [12], odd)
    assert not np.shares_memory(copied, storage) and copied.flags.aligned
    raw = values.tobytes()
    from_bytes = binary_to_numpy("x", "FP32", [12], memoryview(raw))
    assert np.shares_memory(from_bytes, np.frombuffer(raw, np.uint8)) and from_bytes.flags.aligned
    np.testing.assert_array_equal(from_bytes, values)
    odd_bytes = binary_to_numpy("x", "FP64", [1], memoryview(b"x" + raw[:8])[1:])
    assert odd_bytes.flags.aligned and odd_bytes.flags.writeable
    nan = values.copy()
    nan[5] = np.nan
    storage[start : start + values.nbytes] = nan.view(np.uint8)
    with pytest.raises(InvalidInputError, match="finite"):
        binary_to_numpy("x", "FP32", [12], aligned)
