"""Open Inference Protocol gRPC messages <-> the request objects REST uses (`V2Request`).

Every check is the REST one: the runtime's input path (`input_spec`, `check_input`, `check_complete`),
`check_shape`, `binary_to_numpy` for `raw_input_contents` (byte order, sizes: Triton's binary tensor
format, the same bytes as REST's binary extension) and `json_to_numpy` for the typed `contents` fields
(lengths, ranges), and `requested_outputs` for the outputs and their `classification` parameter.
Outputs are always answered in `raw_output_contents`: tritonclient.grpc reads only those.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.api.grpc_messages import open_inference_pb2 as pb
from service.api.v2_codec import V2Request, output_tensors, requested_outputs
from service.errors import InvalidInputError
from service.runtime.model import LoadedModel
from service.runtime.tensors import (
    binary_to_numpy,
    check_shape,
    json_to_numpy,
    numpy_to_binary,
)

# The typed contents field of each datatype (FP16 has none: raw only, as in Triton).
TYPED_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
CONTENT_FIELDS = frozenset(TYPED_FIELD.values())


def parameters_of(parameters: Any, where: str) -> dict[str, Any]:
    """A protobuf map<string, InferParameter> as plain values."""
    values = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is None:
            raise InvalidInputError(f"{where}: parameter {key[:64]!r} has no value")
        values[key] = getattr(parameter, choice)
    return values


def _typed(name: str, datatype: str, shape: list[int], contents: Any) -> np.ndarray:
    field = TYPED_FIELD.get(datatype)
    if field is None:
        raise InvalidInputError(
            f"input {name!r}: {datatype[:32]} has no typed contents field; send it in raw_input_contents"
        )
    for other in CONTENT_FIELDS - {field}:
        if len(getattr(contents, other)):
            raise InvalidInputError(f"input {name!r}: a {datatype} tensor takes {field}, not {other}")
    values = list(getattr(contents, field))
    if datatype == "BYTES":
        try:  # UTF-8 text, as REST's and the binary path's BYTES (the graph's string tensors)
            values = [value.decode("utf-8") for value in values]
        except UnicodeDecodeError as error:
            raise InvalidInputError(f"input {name!r}: BYTES elements must be UTF-8 text") from error
    return json_to_numpy(name, datatype, shape, values)  # REST's checks: count, types, ranges


def decode_infer(request: Any, model: LoadedModel) -> V2Request:
    """Check a ModelInferRequest for `model` (ready) and turn it into the request REST builds."""
    session = model.require_session()
    if not request.inputs:
        takes = ", ".join(session.input_by_name)
        raise InvalidInputError(f"'inputs' must not be empty; the model takes {takes}")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input, in order"
        )
    feeds: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        spec = model.input_spec(name)
        if name in feeds:
            raise InvalidInputError(f"input {name!r} is given twice")
        shape = check_shape(name, list(tensor.shape))
        model.check_input(spec, tensor.datatype, shape)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInputError(f"input {name!r}: give raw_input_contents or contents, not both")
            feeds[name] = binary_to_numpy(name, tensor.datatype, shape, memoryview(raw[index]))
        else:
            feeds[name] = _typed(name, tensor.datatype, shape, tensor.contents)
    model.check_complete(feeds)
    asked = [
        {"name": output.name, "parameters": parameters_of(output.parameters, f"output {output.name[:64]!r}")}
        for output in request.outputs
    ]
    outputs = requested_outputs(asked or None, model, None)
    rows = feeds[session.batch_input].shape[0] if session.batch_input is not None else 1
    return V2Request(feeds, outputs, [o.name for o in outputs], request.id or None, None, rows)


def encode_infer(model: LoadedModel, request: V2Request, results: list[np.ndarray]) -> Any:
    response = pb.ModelInferResponse(
        model_name=model.name, model_version=model.version_str, id=request.id or ""
    )
    for requested, datatype, array in output_tensors(model, request, results):
        response.outputs.add(name=requested.name, datatype=datatype, shape=array.shape)
        response.raw_output_contents.append(numpy_to_binary(array))
    return response
