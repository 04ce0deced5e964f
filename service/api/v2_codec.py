"""Open Inference Protocol V2 infer bodies <-> numpy, by hand (no pydantic on the hot path).

Decoding checks, in order, the document, each input against the graph (name, datatype, shape, limits),
then its data; the requested outputs and their parameters (`classification`, `binary_data`).
Triton's binary tensor data extension is supported both ways (`Inference-Header-Content-Length`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.api.pipeline import Body
from service.api.rest import parse_json
from service.errors import InvalidInputError
from service.runtime.model import LoadedModel
from service.runtime.postprocess import class_scores, top_k_strings
from service.runtime.tensors import (
    binary_to_numpy,
    check_shape,
    json_to_numpy,
    numpy_to_binary,
    numpy_to_json_data,
)

_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_NOT_SCORES = frozenset({"BYTES", "BOOL"})  # outputs that classification cannot rank


@dataclass
class RequestedOutput:
    name: str
    classification: int = 0
    binary: bool = False


@dataclass
class V2Request:
    feeds: dict[str, np.ndarray]
    outputs: list[RequestedOutput]
    output_names: list[str]
    id: str | None
    parameters: dict[str, Any] | None
    rows: int
    timeout_us: object = None  # parameters.timeout: the client's deadline in microseconds (Triton)


def _object(value: object, what: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise InvalidInputError(f"{what} must be a JSON object")
    return value


def decode_request(body: Body, model: LoadedModel, header_length: int | None) -> V2Request:
    """Parse and check a V2 infer body for `model` (already known to be ready)."""
    session = model.require_session()
    if header_length is not None and not 0 <= header_length <= len(body):
        raise InvalidInputError(
            f"Inference-Header-Content-Length {header_length} does not fit a body of {len(body)} bytes"
        )
    view = memoryview(body)
    document = _object(
        parse_json(view[:header_length] if header_length is not None else body), "request body"
    )
    request_id = document.get("id")
    if request_id is not None and type(request_id) is not str:
        raise InvalidInputError("'id' must be a string")
    parameters = document.get("parameters")
    timeout_us = None
    if parameters is not None:
        timeout_us = _object(parameters, "'parameters'").get("timeout")
    inputs = document.get("inputs")
    if type(inputs) is not list or not inputs:
        raise InvalidInputError(
            "'inputs' must be a non-empty list of tensors; the model takes "
            + ", ".join(session.input_by_name)
        )
    feeds: dict[str, np.ndarray] = {}
    offset = header_length if header_length is not None else len(body)
    for item in inputs:
        tensor = _object(item, "each entry of 'inputs'")
        name = tensor.get("name")
        if type(name) is not str:
            raise InvalidInputError("each input needs a string 'name'")
        spec = model.input_spec(name)
        if name in feeds:
            raise InvalidInputError(f"input {name!r} is given twice")
        datatype = tensor.get("datatype")
        if type(datatype) is not str:
            raise InvalidInputError(f"input {name!r}: 'datatype' must be a string such as {spec.datatype}")
        shape = check_shape(name, tensor.get("shape"))
        model.check_input(spec, datatype, shape)
        tensor_parameters = tensor.get("parameters")
        binary_size = None
        if tensor_parameters is not None:
            binary_size = _object(tensor_parameters, f"input {name!r}: 'parameters'").get("binary_data_size")
        if binary_size is not None:
            if header_length is None:
                raise InvalidInputError(
                    f"input {name!r} has binary_data_size but the request has no "
                    "Inference-Header-Content-Length header"
                )
            if type(binary_size) is not int or binary_size < 0 or offset + binary_size > len(body):
                raise InvalidInputError(f"input {name!r}: binary_data_size does not fit the binary data sent")
            feeds[name] = binary_to_numpy(name, datatype, shape, view[offset : offset + binary_size])
            offset += binary_size
        else:
            if "data" not in tensor:
                raise InvalidInputError(f"input {name!r} has no 'data'")
            feeds[name] = json_to_numpy(name, datatype, shape, tensor["data"])
    if offset != len(body):
        raise InvalidInputError(f"{len(body) - offset} bytes of binary data follow that no input claims")
    model.check_complete(feeds)
    outputs = requested_outputs(document.get("outputs"), model, parameters)
    rows = feeds[session.batch_input].shape[0] if session.batch_input is not None else 1
    return V2Request(feeds, outputs, [o.name for o in outputs], request_id, parameters, rows, timeout_us)


def requested_outputs(
    value: object, model: LoadedModel, parameters: dict[str, Any] | None
) -> list[RequestedOutput]:
    session = model.require_session()
    binary_default = bool(parameters and parameters.get("binary_data_output") is True)
    if value is None:
        return [RequestedOutput(name, binary=binary_default) for name in session.output_names]
    if type(value) is not list or not value:
        raise InvalidInputError("'outputs' must be a non-empty list of {\"name\": ...} objects")
    requested: list[RequestedOutput] = []
    for item in value:
        output = _object(item, "each entry of 'outputs'")
        spec = model.output_spec(output.get("name"))
        name = spec.name
        if any(r.name == name for r in requested):
            raise InvalidInputError(f"output {name!r} is requested twice")
        entry = RequestedOutput(name, binary=binary_default)
        output_parameters = output.get("parameters")
        if output_parameters is not None:
            params = _object(output_parameters, f"output {name!r}: 'parameters'")
            classification = params.get("classification", 0)
            if type(classification) is not int or classification < 0:
                raise InvalidInputError(
                    f"output {name!r}: 'classification' must be a positive integer (top k)"
                )
            if classification and spec.datatype in _NOT_SCORES:
                raise InvalidInputError(
                    f"output {name!r}: classification needs numeric scores, the output is {spec.datatype}"
                )
            entry.classification = classification
            binary = params.get("binary_data", binary_default)
            if type(binary) is not bool:
                raise InvalidInputError(f"output {name!r}: 'binary_data' must be true or false")
            entry.binary = binary
        requested.append(entry)
    return requested


def output_tensors(
    model: LoadedModel, request: V2Request, results: list[np.ndarray]
) -> list[tuple[RequestedOutput, str, np.ndarray]]:
    """Each requested output with its datatype and array; a classification output becomes its top-k
    "score:index:label" strings (BYTES). Every protocol encodes these."""
    tensors = []
    output_by_name = model.require_session().output_by_name
    for requested, result in zip(request.outputs, results, strict=True):
        array, datatype = result, output_by_name[requested.name].datatype
        if requested.classification:
            scores = class_scores(result, requested.name, model.task)
            array = top_k_strings(scores, requested.classification, model.class_labels)
            datatype = "BYTES"
        tensors.append((requested, datatype, array))
    return tensors


def encode_response(
    model: LoadedModel, request: V2Request, results: list[np.ndarray]
) -> tuple[bytes, int | None]:
    """The V2 response body, and the JSON header length when binary outputs follow it."""
    outputs: list[dict[str, Any]] = []
    binaries: list[bytes] = []
    for requested, datatype, array in output_tensors(model, request, results):
        entry: dict[str, Any] = {"name": requested.name, "datatype": datatype, "shape": list(array.shape)}
        if requested.binary:
            raw = numpy_to_binary(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            binaries.append(raw)
        else:
            entry["data"] = numpy_to_json_data(array)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": model.name, "model_version": model.version_str}
    if request.id is not None:
        document["id"] = request.id
    if request.parameters:
        document["parameters"] = request.parameters
    document["outputs"] = outputs
    header = orjson.dumps(document, option=_DUMPS_OPTIONS)
    if not binaries:
        return header, None
    return b"".join([header, *binaries]), len(header)
