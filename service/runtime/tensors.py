"""V2 tensors <-> numpy, shared by every protocol: datatypes, shapes, JSON data and checks.

The checks are strict and cheap: element types are compared with `set(map(type, flat))` (C speed),
integer ranges with `min`/`max`, floats with `np.isfinite` (big binary ones by a sum of squares first).
Every message names the tensor, what it expected and what came, and never echoes the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.errors import InvalidInputError

# V2 datatype -> numpy dtype (BYTES travels as numpy object arrays of str, as onnxruntime wants).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

# onnxruntime's type strings -> V2 datatype.
_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
    "tensor(bfloat16)": "BF16",
}

# Largest finite value of the narrow float types (FP64 holds every JSON number orjson accepts).
_FLOAT_LIMITS = {"FP16": float(np.finfo(np.float16).max), "FP32": float(np.finfo(np.float32).max)}
_FLOAT_TYPES = {int, float}
_INT_TYPES = {int}
_BOOL_TYPES = {bool}
_STR_TYPES = {str}
_JSON_TYPE_NAMES = {int: "integer", float: "number", bool: "boolean", str: "string", dict: "object"}


def datatype_of_ort(ort_type: str) -> str:
    """V2 datatype of an onnxruntime type string; unknown types keep their ONNX spelling."""
    return _ORT_TYPES.get(ort_type, ort_type)


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def check_shape(name: str, shape: object) -> list[int]:
    """A request shape must be a list of non-negative integers."""
    if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidInputError(
            f"input {name!r}: 'shape' must be a list of non-negative integers, got {_describe(shape)}"
        )
    return shape


def _describe(value: object) -> str:
    """A short, payload-free description of a JSON value for error messages."""
    if type(value) is list:
        return f"a list of {len(value)} values"
    return _JSON_TYPE_NAMES.get(type(value), "null" if value is None else type(value).__name__)


def _flatten_nested(name: str, data: list[Any], shape: list[int]) -> list[Any]:
    """Flatten `data` nested as `shape` prescribes, checking every level's length."""
    flat: list[Any] = []

    def walk(level: list[Any], depth: int) -> None:
        if len(level) != shape[depth]:
            raise InvalidInputError(
                f"input {name!r}: nested data does not follow shape {shape}: "
                f"level {depth} has {len(level)} values, expected {shape[depth]}"
            )
        if depth == len(shape) - 1:
            flat.extend(level)
            return
        for item in level:
            if type(item) is not list:
                raise InvalidInputError(
                    f"input {name!r}: nested data does not follow shape {shape}: "
                    f"expected a list at level {depth + 1}, got {_describe(item)}"
                )
            walk(item, depth + 1)

    if not shape:
        raise InvalidInputError(f"input {name!r}: nested data needs a shape with at least one axis")
    walk(data, 0)
    return flat


def json_to_numpy(name: str, datatype: str, shape: list[int], data: object) -> np.ndarray:
    """Check and convert one V2 JSON tensor (`data` flat or nested) to a numpy array of `shape`."""
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidInputError(
            f"input {name!r}: unknown datatype {datatype[:32]!r}; expected one of {', '.join(DATATYPES)}"
        )
    if type(data) is not list:
        raise InvalidInputError(f"input {name!r}: 'data' must be a list, got {_describe(data)}")
    flat = _flatten_nested(name, data, shape) if data and type(data[0]) is list else data
    expected = element_count(shape)
    if len(flat) != expected:
        raise InvalidInputError(f"input {name!r}: shape {shape} needs {expected} values, got {len(flat)}")
    kinds = set(map(type, flat))
    kind = dtype.kind
    if kind == "f":
        if not kinds <= _FLOAT_TYPES:
            raise _wrong_elements(name, datatype, "numbers", kinds - _FLOAT_TYPES)
        # orjson never yields NaN/Infinity; what is left is a value past the float type's range.
        limit = _FLOAT_LIMITS.get(datatype)
        if flat and limit is not None and (max(flat) > limit or min(flat) < -limit):
            raise InvalidInputError(
                f"input {name!r}: {datatype} data must be finite numbers within +-{limit:.6g}; "
                "got a value out of range"
            )
        array = np.array(flat, dtype=dtype)
    elif kind in "iu":
        if not kinds <= _INT_TYPES:
            raise _wrong_elements(name, datatype, "integers", kinds - _INT_TYPES)
        if flat:
            info = np.iinfo(dtype)
            low, high = min(flat), max(flat)
            if low < info.min or high > info.max:
                raise InvalidInputError(
                    f"input {name!r}: {datatype} values must lie in [{info.min}, {info.max}]; "
                    f"got values in [{low}, {high}]"
                )
        array = np.array(flat, dtype=dtype)
    elif kind == "b":
        if not kinds <= _BOOL_TYPES:
            raise _wrong_elements(name, datatype, "booleans", kinds - _BOOL_TYPES)
        array = np.array(flat, dtype=dtype)
    else:  # BYTES
        if not kinds <= _STR_TYPES:
            raise _wrong_elements(name, datatype, "strings", kinds - _STR_TYPES)
        array = np.empty(len(flat), dtype=dtype)
        array[:] = flat
    return array.reshape(shape)


def _wrong_elements(name: str, datatype: str, expected: str, got: set[type]) -> InvalidInputError:
    names = sorted(_JSON_TYPE_NAMES.get(t, "null" if t is type(None) else t.__name__) for t in got)
    return InvalidInputError(
        f"input {name!r}: {datatype} data must hold {expected}, got {' and '.join(names)} values"
    )


def numpy_to_json_data(array: np.ndarray) -> Any:
    """Flat row-major data for orjson (numeric arrays go through OPT_SERIALIZE_NUMPY as they are)."""
    if array.dtype.kind == "O" or array.dtype.kind in "SU":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in array.ravel()]
    return np.ascontiguousarray(array).ravel()


def cast_for_model(name: str, value: object, datatype: str) -> np.ndarray:
    """V1 values (no datatype on the wire): nested lists -> an array of the model's datatype."""
    if type(value) is not list:
        value = [value]
    try:
        probe = np.array(value, dtype=np.object_)
    except ValueError as error:  # ragged nesting
        raise InvalidInputError(f"input {name!r}: values are ragged (rows of different lengths)") from error
    if probe.dtype != np.object_ or any(type(x) is list for x in probe.ravel()):
        raise InvalidInputError(f"input {name!r}: values are ragged (rows of different lengths)")
    return json_to_numpy(name, datatype, list(probe.shape), probe.ravel().tolist())


# Triton's binary tensor data extension: raw little-endian row-major bytes; BYTES elements are each
# a 4-byte little-endian length followed by the bytes.


def binary_to_numpy(name: str, datatype: str, shape: list[int], raw: bytes | memoryview) -> np.ndarray:
    """Check and convert one binary-encoded tensor to a numpy array of `shape`."""
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidInputError(
            f"input {name!r}: unknown datatype {datatype[:32]!r}; expected one of {', '.join(DATATYPES)}"
        )
    expected = element_count(shape)
    if dtype.kind == "O":
        return _deserialize_bytes(name, raw, expected).reshape(shape)
    if len(raw) != expected * dtype.itemsize:
        raise InvalidInputError(
            f"input {name!r}: shape {shape} of {datatype} needs {expected * dtype.itemsize} bytes of "
            f"binary data, got {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
    # Used in place where it is aligned and native (a body gathered into its own buffer, a gRPC
    # bytes field): onnxruntime reads a read-only array without a copy, and nothing writes to a feed.
    # A misaligned slice of a body is copied.
    if not (array.flags.aligned and array.dtype.isnative):
        array = array.astype(dtype, copy=True)
    if dtype.kind == "f" and not _all_finite(array):
        raise InvalidInputError(
            f"input {name!r}: {datatype} data must be finite numbers; got NaN or Infinity"
        )
    if dtype.kind == "b" and array.view(np.uint8).max(initial=0) > 1:
        raise InvalidInputError(f"input {name!r}: BOOL binary data must hold bytes 0 or 1")
    return array.reshape(shape)


_DOT_CHECK_MIN = 4096


def _all_finite(array: np.ndarray) -> bool:
    """Whether a float array holds no NaN or Infinity, in one pass without a temporary where BLAS can:
    a sum of squares is NaN or Infinity if any element is (they propagate, and squares cannot cancel an
    Infinity), so only a sum that overflowed (elements near the type's range) needs the exact check.
    FP16 has no BLAS dot; below a few thousand elements the exact check is as cheap."""
    if array.dtype.itemsize >= 4 and array.size >= _DOT_CHECK_MIN:
        flat = array.reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow here is expected, not an error
            squares = np.dot(flat, flat)
        if np.isfinite(squares):
            return True
    return bool(np.isfinite(array).all())


def _deserialize_bytes(name: str, raw: bytes | memoryview, expected: int) -> np.ndarray:
    view = memoryview(raw)
    items: list[str] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InvalidInputError(f"input {name!r}: BYTES binary data ends inside a length prefix")
        length = int.from_bytes(view[offset : offset + 4], "little")
        offset += 4
        if offset + length > len(view):
            raise InvalidInputError(f"input {name!r}: BYTES binary element runs past the data")
        try:
            items.append(bytes(view[offset : offset + length]).decode("utf-8"))
        except UnicodeDecodeError as error:
            raise InvalidInputError(f"input {name!r}: BYTES elements must be UTF-8 text") from error
        offset += length
    if len(items) != expected:
        raise InvalidInputError(f"input {name!r}: shape needs {expected} BYTES elements, got {len(items)}")
    array = np.empty(len(items), dtype=np.object_)
    array[:] = items
    return array


def numpy_to_binary(array: np.ndarray) -> bytes:
    """One output tensor in the binary tensor data encoding."""
    if array.dtype.kind in "OSU":
        parts = []
        for item in array.ravel():
            data = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts.append(len(data).to_bytes(4, "little"))
            parts.append(data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
