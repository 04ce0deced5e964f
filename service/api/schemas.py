"""Request/response schemas, for /docs only: the hot routes parse by hand and never validate with these."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str = Field(description="What was wrong and what was expected.")


class MetadataTensor(BaseModel):
    name: str
    datatype: str = Field(description="V2 datatype, e.g. FP32, INT64, BYTES.")
    shape: list[int] = Field(description="-1 marks a dynamic axis.")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    ready: bool = Field(description="recap-serve extension: loaded and serving.")
    reason: str | None = Field(None, description="Why the model is not ready.")
    providers: list[str] = Field(description="onnxruntime execution providers the session got.")
    task: str | None = None
    labels: list[str] | None = None
    description: str | None = None
    max_batch_size: int | None = None
    version_states: list[dict[str, str]] | None = Field(
        None, description="recap-serve extension: each version's state (READY, UNAVAILABLE, PENDING), reason."
    )


class ModelReady(BaseModel):
    name: str
    version: str
    ready: bool


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(description="Row-major flat or nested values.")


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(
        None, description='{"classification": k} answers the top k as "score:index:label" strings.'
    )


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class PredictRequest(BaseModel):
    instances: list[Any] | None = Field(None, description="Rows (one per example); objects for multi-input.")
    inputs: Any | None = Field(None, description="Columns: a value, or {input name: value}.")


class PredictResponse(BaseModel):
    predictions: list[Any] | None = None
    outputs: Any | None = None


class ClassifyResponse(BaseModel):
    results: list[list[tuple[str, float]]] = Field(
        description="Per instance: [label, probability], best first."
    )


class V1VersionStatus(BaseModel):
    version: str
    state: str = Field(description="AVAILABLE or UNAVAILABLE")
    status: dict[str, str]


class V1ModelStatus(BaseModel):
    model_version_status: list[V1VersionStatus]


class GenerateParameters(BaseModel):
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate (capped by the server).")
    temperature: float = Field(0.0, ge=0, description="0: greedy (argmax); higher: more random sampling.")
    top_k: int = Field(0, ge=0, description="Sample only among the k most likely tokens; 0: no cut.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: smallest set with this much mass.")
    seed: int | None = Field(None, ge=0, description="Same seed, same text; none: a fresh random seed.")
    stop: str | list[str] | None = Field(None, description="Stop strings, cut from the output.")
    timeout: int | None = Field(
        None,
        gt=0,
        description="Deadline in microseconds (Triton's spelling); shortens the server's, never extends it.",
    )


class GenerateRequest(BaseModel):
    text_input: str = Field(description="The prompt (language model) or the source text (seq2seq).")
    parameters: GenerateParameters | None = None


class GenerateResponse(BaseModel):
    model_name: str
    model_version: str
    text_output: str = Field(description="Generated text (streamed: this event's piece).")
    finish_reason: str = Field(
        description='"length" (max_tokens), "stop" (a stop string), "eos", or "timeout" (a stream past '
        "its deadline)."
    )
    tokens: int = Field(description="Model steps taken.")


DOC_MODELS: tuple[type[BaseModel], ...] = (
    InferenceRequest,
    InferenceResponse,
    PredictRequest,
    GenerateRequest,
)


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """openapi_extra for a hand-parsed JSON body described by `model` (see main.custom_openapi)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}
