"""V1 / TF-Serving style REST: model status, `:predict` (instances or inputs) and `:classify`."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api import schemas
from service.api.state import AppState
from service.api.v2 import json_response
from service.api.v2_codec import parse_json
from service.errors import InternalError, InvalidInputError, RecapError
from service.runtime.postprocess import class_scores, ranked_labels
from service.runtime.repository import LoadedModel
from service.runtime.session import check_input
from service.runtime.tensors import cast_for_model

log = logging.getLogger(__name__)


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
    for name in columns:
        if name not in session.input_by_name:
            raise InvalidInputError(f"unknown input {str(name)[:64]!r}; the model takes {names}")
    feeds = {}
    for spec in specs:
        if spec.name not in columns:
            raise InvalidInputError(f"missing input {spec.name!r}; the model takes {names}")
        array = cast_for_model(spec.name, columns[spec.name], spec.datatype)
        check_input(spec, spec.datatype, array.shape, model.batch_limit, model.max_sequence_length)
        feeds[spec.name] = array
    return feeds, rows


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype.kind in "OSU":
        return array.tolist()
    return array


def predict(model: LoadedModel, document: dict[str, Any]) -> dict[str, Any]:
    feeds, rows = _columns(model, document)
    results = model.run(feeds, checked=True)
    names = list(results)
    if rows:
        if len(names) == 1:
            return {"predictions": _jsonable(results[names[0]])}
        count = len(next(iter(results.values())))
        return {"predictions": [{n: _jsonable(results[n][i]) for n in names} for i in range(count)]}
    if len(names) == 1:
        return {"outputs": _jsonable(results[names[0]])}
    return {"outputs": {n: _jsonable(a) for n, a in results.items()}}


def classify(model: LoadedModel, document: dict[str, Any]) -> dict[str, Any]:
    session = model.require_session()
    if "probabilities" not in session.output_by_name:
        raise InvalidInputError(f"model {model.name!r} has no 'probabilities' output to classify with")
    feeds, _ = _columns(model, document)
    probabilities = model.run(feeds, ["probabilities"], checked=True)["probabilities"]
    scores = class_scores(probabilities, "probabilities", model.task)
    return {"results": ranked_labels(scores, model.labels)}


def build_router(state: AppState) -> APIRouter:
    router = APIRouter(tags=["v1"])
    repository = state.repository
    unknown = state.metrics.unknown

    async def handle(
        request: Request, name: str, version: str | None, work: Callable[[LoadedModel, dict[str, Any]], Any]
    ) -> Response:
        start = time.perf_counter()
        metrics = unknown
        try:
            model = repository.get(name, version)
            metrics = model.metrics
            model.require_session()
            document = parse_json(await request.body())
            if type(document) is not dict:
                raise InvalidInputError("request body must be a JSON object")
            return json_response(work(model, document))
        except RecapError as error:
            metrics.failure("v1", error.code)
            raise
        except Exception as error:
            log.exception("unexpected error in V1 request")
            metrics.failure("v1", InternalError.code)
            raise InternalError("internal server error") from error
        finally:
            children = metrics.protocols["v1"]
            children.requests.inc()
            children.duration.observe(time.perf_counter() - start)

    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": schemas.ErrorBody},
        404: {"model": schemas.ErrorBody},
        503: {"model": schemas.ErrorBody},
    }
    body = schemas.request_body(schemas.PredictRequest)

    def post(path: str, work: Callable[[LoadedModel, dict[str, Any]], Any], answer: type) -> None:
        async def default(request: Request, model_name: str) -> Response:
            return await handle(request, model_name, None, work)

        async def versioned(request: Request, model_name: str, model_version: str) -> Response:
            return await handle(request, model_name, model_version, work)

        endpoints: list[tuple[str, Callable[..., Awaitable[Response]]]] = [
            (f"/v1/models/{{model_name}}:{path}", default),
            (f"/v1/models/{{model_name}}/versions/{{model_version}}:{path}", versioned),
        ]
        for route, endpoint in endpoints:
            router.add_api_route(
                route,
                endpoint,
                methods=["POST"],
                summary=f"V1 {path}",
                openapi_extra=body,
                responses={200: {"model": answer}, **errors},
            )

    post("predict", predict, schemas.PredictResponse)
    post("classify", classify, schemas.ClassifyResponse)

    @router.get("/v1/models/{model_name}", responses={200: {"model": schemas.V1ModelStatus}, **errors})
    @router.get(
        "/v1/models/{model_name}/versions/{model_version}",
        responses={200: {"model": schemas.V1ModelStatus}, **errors},
    )
    async def status(model_name: str, model_version: str | None = None) -> Response:
        models = (
            repository.versions(model_name)
            if model_version is None
            else [repository.get(model_name, model_version)]
        )
        return json_response(
            {
                "model_version_status": [
                    {
                        "version": m.version_str,
                        "state": "AVAILABLE" if m.ready else "UNAVAILABLE",
                        "status": {
                            "error_code": "OK" if m.ready else "UNAVAILABLE",
                            "error_message": m.reason or "",
                        },
                    }
                    for m in models
                ]
            }
        )

    return router
