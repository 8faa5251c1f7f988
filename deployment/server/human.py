"""Routes for people: the web page, one-image prediction and feedback on it.

GET  /          static/index.html (choose or drop an image, see top-k, correct it)
POST /predict   multipart/form-data with one file (field "file"), or a raw image/* body;
                ?model=NAME picks the model when several are served (one: it, by default);
                -> {request_id, model_name, model_version, label, score, labels_present,
                top_k}: labels_present at the bundle's cut-offs (calibration.json; binary and
                multi-label), `label` the single-label answer or the top multi-label score,
                ood: {score, reasons} (deployment/server/ood.py; null when the bundle has no
                input_stats.json); 422 when the score is over --ood-threshold
                415 for any other content type
POST /feedback  {request_id, true_label} -> the stored record; the uploaded image (without
                its metadata) and its true label join the feedback dataset once accepted
                in review (deployment/server/feedback_store.py, review.py)
DELETE /feedback/{request_id}
                -> {deleted, removed: [files]}: the upload, its record and the dataset files
                made of them are gone (retention.py); 404 when nothing is kept of it. The
                request_id, 128 random bits only its uploader was told, is the capability.
"""

import uuid
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from deployment.server import predict as sequence
from deployment.server.door import pinned
from deployment.server.errors import ApiError
from deployment.server.feedback_store import REQUEST_ID
from deployment.server.oip import parse_body
from deployment.server.predict import Inputs, decide_labels, top_k
from deployment.server.review_store import client_id

PAGE = Path(__file__).parent / "static" / "index.html"
TOP_K = 5


async def _image_bytes(request: Request) -> bytes:
    """The uploaded image's bytes; 415 unless multipart/form-data or image/*."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith("image/"):
        return await request.body()
    if content_type != "multipart/form-data":
        raise ApiError(415, f"send multipart/form-data or image/*, not {content_type!r}")
    # a malformed multipart body raises HTTPException(400), answered as JSON by serve.py
    async with request.form(max_files=1, max_fields=4) as form:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise ApiError(400, "multipart body has no file field named 'file'")
        return await file.read()


def answer(probs, bundle) -> tuple[list, list[str], str, float]:
    """(top k, the labels at the bundle's cut-offs, the one label, its score) of one image:
    the label is the decided one for single-label (a binary cut-off may choose the second
    score), the top score for multi-label, whose full answer is the decided list."""
    best = top_k(probs, bundle.labels, TOP_K)[0]
    chosen = decide_labels(probs, bundle)
    if getattr(bundle.predictor, "label_mode", "single") != "single":
        return best, chosen, best[0][2], best[0][0]
    return best, chosen, chosen[0], float(probs[0][bundle.labels.index(chosen[0])])


def add_routes(app: FastAPI, state) -> None:
    """Add /, /predict and /feedback to app; state is deployment.server.lifecycle.State.

    Each request uses the bundle pinned to it on arrival (door.pinned).
    """

    @app.get("/")
    def page():
        # The bytes, not a FileResponse: that one answers Range headers, a bad one with a
        # plain-text 400/416 rather than the JSON every other error is.
        return Response(PAGE.read_bytes(), media_type="text/html")

    @app.post("/predict")
    async def predict(request: Request):
        bundle = pinned(request).choose(request.query_params.get("model"))
        data = await _image_bytes(request)
        result = await sequence.predict(state, bundle, Inputs(encoded=[data]))
        best, chosen, label, score = answer(result.scores, bundle)
        request_id = uuid.uuid4().hex
        predicted = {
            "model_name": bundle.name,
            "model_version": bundle.version,
            "predicted_label": label,
            "score": score,
            "client": client_id(request.client.host if request.client else None),  # agreement
        }
        if state.store.store_uploads:  # writes the upload: off the event loop
            await run_in_threadpool(
                state.store.remember, request_id, data, predicted, bundle.labels
            )
        else:
            state.store.remember(request_id, data, predicted, bundle.labels)
        return state.reply(
            {
                "request_id": request_id,
                "model_name": bundle.name,
                "label": label,
                "score": score,
                "labels_present": chosen,
                "top_k": [{"label": lab, "index": i, "score": s} for s, i, lab in best],
                "labels": bundle.labels,
                "ood": result.ood[0] if result.ood else None,
            },
            bundle=bundle,
        )

    @app.post("/feedback")
    async def feedback(request: Request):
        if state.store is None:
            raise ApiError(503, "the feedback store is not open yet", {"Retry-After": "1"})
        body, _ = parse_body(await request.body(), None, state.budget)
        record = await run_in_threadpool(state.store.record, body)
        return state.reply({"stored": True, "record": record}, bundle=pinned(request).only)

    _route_delete(app, state)


def _route_delete(app: FastAPI, state) -> None:
    @app.delete("/feedback/{request_id}")
    async def forget(request_id: str):
        if not REQUEST_ID.fullmatch(request_id):
            raise ApiError(400, "request_id must be the 32 hex characters /predict returned")
        if state.store is None:
            raise ApiError(503, "the feedback store is not open yet")
        removed = await run_in_threadpool(state.store.delete, request_id)
        if removed is None:
            raise ApiError(404, f"nothing is stored of request_id {request_id}")
        return state.reply({"deleted": request_id, "removed": removed})
