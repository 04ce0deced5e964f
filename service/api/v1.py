"""V1 / TF-Serving style REST: model status, `:predict` (instances or inputs) and `:classify`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Receive

from service.api import schemas
from service.api.pipeline import Call, Endpoint
from service.api.rest import json_response, parse_object, serve
from service.api.state import AppState
from service.errors import InvalidInputError
from service.runtime.model import LoadedModel
from service.runtime.postprocess import class_scores, ranked_labels
from service.runtime.tensors import cast_for_model

V1_STATUS = Endpoint("v1", "status", needs_session=False)


def _columns(model: LoadedModel, document: dict[str, Any]) -> tuple[dict[str, np.ndarray], bool]:
    """The feeds of a predict/classify body, and whether it was in row ("instances") format."""
    session = model.require_session()
    specs = session.inputs
    if ("instances" in document) == ("inputs" in document):
        raise InvalidInputError("the body needs exactly one of 'instances' (rows) or 'inputs' (columns)")
    names = ", ".join(session.input_by_name)
    rows = "instances" in document
    if rows:
        instances = document["instances"]
        if type(instances) is not list or not instances:
            raise InvalidInputError("'instances' must be a non-empty list of rows")
        if all(type(row) is dict for row in instances):
            columns = {}
            for spec in specs:
                if not all(spec.name in row for row in instances):
                    raise InvalidInputError(
                        f"every instance needs the input {spec.name!r}; the model takes {names}"
                    )
                columns[spec.name] = [row[spec.name] for row in instances]
            for row in instances:
                for name in row:
                    model.input_spec(name)
        elif len(specs) == 1:
            columns = {specs[0].name: instances}
        else:
            raise InvalidInputError(
                f"the model takes several inputs ({names}): each instance must be an object"
            )
    else:
        given = document["inputs"]
        if type(given) is dict:
            columns = given
        elif len(specs) == 1:
            columns = {specs[0].name: given}
        else:
            raise InvalidInputError(f"the model takes several inputs ({names}): 'inputs' must be an object")
    feeds = {}
    for name, value in columns.items():
        spec = model.input_spec(name)
        array = cast_for_model(spec.name, value, spec.datatype)
        model.check_input(spec, spec.datatype, array.shape)
        feeds[spec.name] = array
    model.check_complete(feeds)
    return feeds, rows


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype.kind in "OSU":
        return array.tolist()
    return array


def predict(call: Call, model: LoadedModel, document: dict[str, Any]) -> dict[str, Any]:
    feeds, rows = _columns(model, document)
    names = model.require_session().output_names
    results = dict(zip(names, call.run_model(model, names, feeds), strict=True))
    if rows:
        if len(names) == 1:
            return {"predictions": _jsonable(results[names[0]])}
        count = len(results[names[0]])
        return {"predictions": [{n: _jsonable(results[n][i]) for n in names} for i in range(count)]}
    if len(names) == 1:
        return {"outputs": _jsonable(results[names[0]])}
    return {"outputs": {n: _jsonable(a) for n, a in results.items()}}


def classify(call: Call, model: LoadedModel, document: dict[str, Any]) -> dict[str, Any]:
    if "probabilities" not in model.require_session().output_by_name:
        raise InvalidInputError(f"model {model.name!r} has no 'probabilities' output to classify with")
    feeds, _ = _columns(model, document)
    (probabilities,) = call.run_model(model, ["probabilities"], feeds)
    scores = class_scores(probabilities, "probabilities", model.task)
    return {"results": ranked_labels(scores, model.class_labels)}


def version_status(models: list[LoadedModel]) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": m.version_str,
                "state": "AVAILABLE" if m.ready else "UNAVAILABLE",
                "status": {"error_code": "OK" if m.ready else "UNAVAILABLE", "error_message": m.reason or ""},
            }
            for m in models
        ]
    }


def build_router(state: AppState) -> APIRouter:
    router = APIRouter(tags=["v1"])
    repository, pipeline = state.repository, state.pipeline
    errors: dict[int | str, dict[str, Any]] = {code: {"model": schemas.ErrorBody} for code in (400, 404, 503)}
    body_docs = schemas.request_body(schemas.PredictRequest)

    def post(
        verb: str, answer: Callable[[Call, LoadedModel, dict[str, Any]], dict[str, Any]], docs: type
    ) -> None:
        endpoint = Endpoint("v1", verb)

        async def work(call: Call, model: LoadedModel, receive: Receive) -> Response:
            return json_response(answer(call, model, parse_object(await call.read_body(receive))))

        async def route(request: Request, model_name: str, model_version: str | None = None) -> Response:
            return await serve(pipeline, request, endpoint, work, request.receive)

        for path in (
            f"/v1/models/{{model_name}}:{verb}",
            f"/v1/models/{{model_name}}/versions/{{model_version}}:{verb}",
        ):
            router.add_api_route(
                path,
                route,
                methods=["POST"],
                summary=f"V1 {verb}",
                openapi_extra=body_docs,
                responses={200: {"model": docs}, **errors},
            )

    post("predict", predict, schemas.PredictResponse)
    post("classify", classify, schemas.ClassifyResponse)

    async def status_work(call: Call, model: LoadedModel, every_version: bool) -> Response:
        return json_response(version_status(repository.versions(model.name) if every_version else [model]))

    status_docs: dict[int | str, dict[str, Any]] = {200: {"model": schemas.V1ModelStatus}, **errors}

    @router.get("/v1/models/{model_name}", responses=status_docs)
    @router.get("/v1/models/{model_name}/versions/{model_version}", responses=status_docs)
    async def status(request: Request, model_name: str, model_version: str | None = None) -> Response:
        every_version = model_version is None
        return await serve(pipeline, request, V1_STATUS, status_work, every_version)

    return router
