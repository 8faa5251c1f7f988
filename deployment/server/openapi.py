"""The API's contract: GET /openapi.json (OpenAPI 3.1) and GET /docs (Swagger UI, from local
files: nothing is fetched at run time).

contract.OPERATIONS is the one table of what the server answers. The schema is built from
it, not from the route functions: v2 infer is answered by the door (door.py) before FastAPI,
and several routes read their body themselves (images, multipart). It describes the model
being served: its name and version, and its labels where a request names one, are enums
(built once per loaded version). tests/test_openapi.py checks that the table and the app's
routes are the same set; schemathesis runs every check against a real server from this
schema (tests/test_openapi.py too).

Statuses every operation may return besides its own: 413 when a body is over
--max-body-bytes, and 503 while the server shuts down (not for health and metrics).
"""

import re
from functools import cache
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import Response

from deployment.server.contract import (
    DESCRIPTION,
    ERROR,
    OPERATIONS,
    REASONS,
    REQUEST_ID,
    json_of,
)
from deployment.server.errors import ApiError, dumps

ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css")  # served from the fastapi-offline package

ALWAYS_ANSWERED = {"/v2/health/live", "/v2/health/ready", "/metrics"}  # door.py: also draining
PARAMETER = re.compile(r"\{(\w+)\}")


def schema(version: str, served=None) -> dict:
    """The OpenAPI 3.1 document of OPERATIONS, for the models served (served.Served: their
    names and versions; the labels too when one model is served)."""
    served = served if served is not None and served.models else None
    paths: dict = {}
    for (method, path), operation in OPERATIONS.items():
        operation = {**operation, "responses": dict(operation["responses"])}
        if method != "get" or path not in ALWAYS_ANSWERED:
            draining = {"description": REASONS[503], "content": json_of(ERROR)}
            operation["responses"].setdefault("503", draining)
        if "requestBody" in operation:
            too_big = {"description": REASONS[413], "content": json_of(ERROR)}
            operation["responses"].setdefault("413", too_big)
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": _path_schema(name, served)}
            for name in PARAMETER.findall(path)
        ]
        operation["parameters"] = parameters + operation.get("parameters", [])
        if served is not None:
            operation = _with_models(operation, served)
        operation["operationId"] = (
            f"{method}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_') or 'root'}"
        )
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "reprovision", "version": version, "description": DESCRIPTION},
        "paths": paths,
    }


def _path_schema(name: str, served) -> dict:
    if name == "request_id":
        return REQUEST_ID  # what /predict returned; anything else is 400
    if served is not None:  # the served models: any other name or version is 404
        values = served.names if name == "name" else {b.version for b in served.models.values()}
        return {"type": "string", "enum": sorted(values)}
    return {"type": "string", "pattern": "^[^/:]+$"}


def _with_models(operation: dict, served) -> dict:
    """The operation with the served names as the enum of ?model and, when one model is
    served, its labels as the enum of true_label and ?label."""
    names = {"type": "string", "enum": sorted(served.names)}
    parameters = [
        {**p, "schema": names} if p["name"] == "model" else p for p in operation["parameters"]
    ]
    operation = {**operation, "parameters": parameters}
    return _with_labels(operation, served.only.labels) if served.only else operation


def _with_labels(operation: dict, labels: list[str]) -> dict:
    """The operation with the model's labels as the enum of true_label and ?label."""
    label = {"type": "string", "enum": list(labels)}
    parameters = [
        {**p, "schema": label} if p["name"] == "label" else p for p in operation["parameters"]
    ]
    operation = {**operation, "parameters": parameters}
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body and "true_label" in body["schema"].get("properties", {}):
        properties = {**body["schema"]["properties"], "true_label": label}
        content = {"application/json": {"schema": {**body["schema"], "properties": properties}}}
        operation["requestBody"] = {**operation["requestBody"], "content": content}
    return operation


def allowed(app: FastAPI, path: str) -> list[str]:
    """The methods some route of `app` takes at `path` (405's Allow header), HEAD with GET."""
    methods: set[str] = set()
    for route in app.router.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path) and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)


@cache
def _asset(name: str) -> bytes:
    import fastapi_offline

    return (Path(fastapi_offline.__file__).parent / "static" / name).read_bytes()


def add_routes(app: FastAPI, state) -> None:
    """GET /openapi.json from OPERATIONS for the model being served, and GET /docs: Swagger
    UI from local files."""
    documents: dict[tuple, bytes] = {}

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request):
        served = state.served
        key = tuple(sorted((n, b.version) for n, b in served.models.items()))
        if key not in documents:
            documents.clear()  # the served versions' only
            documents[key] = dumps(schema(app.version, served))
        return Response(documents[key], media_type="application/json")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="reprovision: the API",
            swagger_js_url=f"/docs/{ASSETS[0]}",
            swagger_css_url=f"/docs/{ASSETS[1]}",
            swagger_favicon_url="data:,",
        )

    @app.get("/docs/{asset}", include_in_schema=False)
    async def asset(asset: str):
        if asset not in ASSETS:
            raise ApiError(404, f"no such file; /docs serves {list(ASSETS)}")
        kind = "text/css" if asset.endswith(".css") else "text/javascript"
        return Response(_asset(asset), media_type=kind)
