"""The API's contract, as data: OPERATIONS, every route the server answers with its request
body and every status it can return, with their bodies (JSON Schema). openapi.py builds
GET /openapi.json from it; tests/test_openapi.py checks it against the routes and the server.
"""

DESCRIPTION = (
    "An image classifier exported by reprovision: Open Inference Protocol v2 (KServe, "
    "Triton), TensorFlow Serving v1, a web page, feedback and its review, Prometheus "
    'metrics. Every error is JSON {"error": ..., "model_version": ...}. Request budget: '
    "--max-body-bytes, --max-json-values, --max-images, --max-pixels, --max-input-mib "
    "(413 over any)."
)

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "model_version": {"type": ["string", "null"]},
    },
}
REASONS = {
    400: "malformed request (the error says which field and what was expected)",
    401: "the review token is missing or wrong",
    403: "without a review token, /review answers only loopback clients",
    404: "unknown model, version or request_id",
    405: "method not allowed (see Allow)",
    409: "the record was decided already",
    413: "over the request budget (the error names the flag)",
    415: "unsupported content type",
    422: "an image is out of distribution (over --ood-threshold), or cannot be stored",
    501: "explanations need TensorFlow and a bundle that carries them",
    503: "not ready, out of memory (Retry-After) or shutting down",
    507: "the feedback store's disk is full",
}
VERSIONED = {"model_version": {"type": ["string", "null"]}}
PROBS = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
TOP_K = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "label": {"type": "string"},
            "index": {"type": "integer"},
            "score": {"type": "number"},
        },
    },
}
PREDICTED = {
    "type": "object",
    "required": ["model_name", "label", "score", "top_k"],
    "properties": {
        "request_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "model_name": {"type": "string"},
        "label": {"type": "string"},
        "score": {"type": "number"},
        "labels_present": {"type": "array", "items": {"type": "string"}},
        "top_k": TOP_K,
        "labels": {"type": "array", "items": {"type": "string"}},
        "ood": {"type": ["object", "null"]},
        **VERSIONED,
    },
}
NULLABLE = ["object", "null"]  # an absent object may be sent as null
SIZE = {"type": "integer", "minimum": 1}
IMAGE_TENSOR = {  # encoded files: base64 text in JSON, or binary_data_size bytes after it
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"const": "image"},
        "datatype": {"const": "BYTES"},
        "shape": {
            "type": "array",
            "prefixItems": [SIZE, {"const": 1}],
            "minItems": 1,
            "maxItems": 2,
        },
        "data": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "array"}]}},
        "parameters": {"type": NULLABLE, "properties": {"binary_data_size": SIZE}},
    },
}
PIXELS_TENSOR = {  # uint8 [N, H, W, C], C the model's channels; flat or nested
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"const": "pixels"},
        "datatype": {"const": "UINT8"},
        "shape": {"type": "array", "items": SIZE, "minItems": 4, "maxItems": 4},
        "data": {
            "type": "array",
            "items": {
                "anyOf": [{"type": "integer", "minimum": 0, "maximum": 255}, {"type": "array"}]
            },
        },
        "parameters": {"type": NULLABLE, "properties": {"binary_data_size": SIZE}},
    },
}
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {
            "type": "array",
            "items": {"oneOf": [IMAGE_TENSOR, PIXELS_TENSOR]},
            "minItems": 1,
            "maxItems": 1,
        },
        "outputs": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"const": "probabilities"},
                    "parameters": {
                        "type": NULLABLE,
                        "properties": {
                            "classification": {"type": "integer", "minimum": 0},
                            "binary_data": {"type": "boolean"},
                        },
                    },
                },
            },
        },
        "parameters": {
            "type": NULLABLE,
            "properties": {"binary_data_output": {"type": "boolean"}},
        },
    },
    "example": {
        "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 2, 2, 1], "data": [0] * 4}]
    },
}
INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": {"type": "object"}},
        "parameters": {"type": "object"},
        **VERSIONED,
    },
}
METADATA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array"},
        "outputs": {"type": "array"},
        **VERSIONED,
    },
}
UPLOAD = {  # /predict and /explain: one image, as multipart or as the body itself
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"}},
        }
    },
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
}
REQUEST_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
FEEDBACK = {
    "type": "object",
    "required": ["request_id", "true_label"],
    "properties": {"request_id": REQUEST_ID, "true_label": {"type": "string", "minLength": 1}},
    "additionalProperties": False,
}
DECISION = {
    "type": "object",
    "required": ["decision"],
    "properties": {"decision": {"type": "string", "enum": ["accept", "reject"]}},
    "additionalProperties": False,
}
OBJECT = {"type": "object"}


def json_of(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _op(summary: str, ok: dict, errors=(), body: dict | None = None, **extra) -> dict:
    """One operation: its 200 content, its error statuses, its request body."""
    op = {"summary": summary, "responses": {"200": {"description": "OK", "content": ok}}}
    for status in sorted(errors):
        op["responses"][str(status)] = {"description": REASONS[status], "content": json_of(ERROR)}
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    return op | extra


def _query(name: str, schema: dict) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema}


BINARY = {"schema": {"type": "string", "format": "binary"}}
HTML = {"text/html": {"schema": {"type": "string"}}}
PAGE_PARAM = _query("page", {"type": "integer", "minimum": 1, "maximum": 9_999_999})
TOKEN_PARAM = _query("token", {"type": "string"})
LABEL_PARAM = _query("label", {"type": "string"})
MODEL_PARAM = _query("model", {"type": "string"})  # which model, when several are served
MODEL = (404, 503)  # a model route: unknown name or version, or no model yet
IMAGES = (400, 404, 413, 422, 503)  # a prediction: bad input, model, budget, OOD, memory
INSTANCES = {
    "type": "object",
    "required": ["instances"],
    "properties": {
        "instances": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["b64"],
                "properties": {"b64": {"type": "string"}},
                "additionalProperties": False,
            },
        }
    },
}
INFER = _op(
    "v2 infer (Open Inference Protocol): images as BYTES or UINT8 pixels",
    json_of(INFER_RESPONSE) | {"application/octet-stream": {"schema": {"type": "string"}}},
    IMAGES,
    body=json_of(INFER_REQUEST),
)
V1_OK = json_of({"type": "object", "properties": {"predictions": PROBS, **VERSIONED}})
V1 = _op("TensorFlow Serving v1 predict", V1_OK, IMAGES, body=json_of(INSTANCES))
METADATA_OP = _op("model metadata", json_of(METADATA), MODEL)
READY_OP = _op("model readiness", json_of(OBJECT), MODEL)
STATUS_OP = _op("TensorFlow Serving model status", json_of(OBJECT), MODEL)
STORED = {"type": "object", "properties": {"stored": {"type": "boolean"}, "record": OBJECT}}
UPLOADS = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/tiff", "image/webp")
OPERATIONS = {
    ("get", "/v2/health/live"): _op("liveness (and the answering process)", json_of(OBJECT)),
    ("get", "/v2/health/ready"): _op(
        "readiness (every worker has its model)", json_of(OBJECT), (503,)
    ),
    ("get", "/v2"): _op("server metadata", json_of(OBJECT), (503,)),
    ("post", "/v2/repository/index"): _op("the loaded model", json_of({"type": "array"}), (503,)),
    ("get", "/v2/models/{name}"): METADATA_OP,
    ("get", "/v2/models/{name}/versions/{version}"): METADATA_OP,
    ("get", "/v2/models/{name}/ready"): READY_OP,
    ("get", "/v2/models/{name}/versions/{version}/ready"): READY_OP,
    ("post", "/v2/models/{name}/infer"): INFER,
    ("post", "/v2/models/{name}/versions/{version}/infer"): INFER,
    ("get", "/v1/models/{name}"): STATUS_OP,
    ("get", "/v1/models/{name}/versions/{version}"): STATUS_OP,
    ("post", "/v1/models/{name}:predict"): V1,
    ("post", "/v1/models/{name}/versions/{version}:predict"): V1,
    ("get", "/"): _op("the web page", HTML),
    ("post", "/predict"): _op(
        "one image's top-k, for people (multipart field 'file', or an image/* body)",
        json_of(PREDICTED),
        (400, 404, 413, 415, 422, 503),
        body=UPLOAD,
        parameters=[MODEL_PARAM],
    ),
    ("post", "/explain"): _op(
        "/predict with a heat map of where the model looked",
        json_of(PREDICTED) | {"image/png": BINARY},
        (400, 404, 413, 415, 422, 501, 503),
        body=UPLOAD,
        parameters=[LABEL_PARAM, MODEL_PARAM],
    ),
    ("post", "/feedback"): _op(
        "the true label of a /predict answer",
        json_of(STORED),
        (400, 404, 413, 422, 503, 507),
        body=json_of(FEEDBACK),
    ),
    ("delete", "/feedback/{request_id}"): _op(
        "forget an upload and everything made of it", json_of(OBJECT), (400, 404, 503)
    ),
    ("get", "/review"): _op(
        "the review page of pending feedback",
        HTML,
        (400, 401, 403, 503),
        parameters=[PAGE_PARAM, TOKEN_PARAM],
    ),
    ("get", "/review/image/{request_id}"): _op(
        "a stored upload, for the reviewer",
        {kind: BINARY for kind in UPLOADS},
        (400, 401, 403, 404, 503),
        parameters=[TOKEN_PARAM],
    ),
    ("post", "/review/{request_id}"): _op(
        "accept or reject one feedback record",
        json_of({"type": "object", "properties": {"record": OBJECT}}),
        (400, 401, 403, 404, 409, 413, 415, 503),
        body=json_of(DECISION),
        parameters=[TOKEN_PARAM],
    ),
    ("get", "/metrics"): _op("Prometheus metrics", {"text/plain": {"schema": {"type": "string"}}}),
}
