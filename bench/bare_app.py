"""The baseline of the benchmark: the barest FastAPI endpoint, answering a constant V2-shaped body."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response

CONSTANT = (
    b'{"model_name":"bare","outputs":[{"name":"probabilities","datatype":"FP32","shape":[1,1],"data":[0.5]}]}'
)

# Same FastAPI settings as recap-serve where they cost per request (no OpenTelemetry hooks).
app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})


@app.post("/v2/models/{model_name}/infer")
async def infer(model_name: str) -> Response:
    return Response(CONSTANT, media_type="application/json")
