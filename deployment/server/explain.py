"""POST /explain: where the served model looked, as a heat map over the uploaded image.

POST /explain   the body of POST /predict (multipart/form-data with field "file", or a raw
                image/* body); ?label=NAME explains that class instead of the answer's
                -> {model_name, model_version, label, score, labels_present, top_k: as
                /predict; method: "grad-cam" or "integrated-gradients", layer: where,
                explained: {label, index}: the class the heat map is of, size: [h, w] the
                model's input, heatmap_png: base64 PNG of the heat map over the image as
                the model saw it, enlarged to at least 224 pixels}
                With `Accept: image/png`, that PNG is the body, and headers X-Label,
                X-Score, X-Explained, X-Method and X-Model-Version carry the rest (labels
                URL-quoted).
                501 when the server has no TensorFlow (the serve-only image) or the bundle
                was exported before explanations; other errors as /predict.

Gradients need the Keras model: ONNX has none. The first /explain for a bundle loads its
model.keras with its own code/ (serving.load, backend "tf"; about 2-5 s and the memory of
TensorFlow, once per worker process), in a worker thread, and keeps it for that bundle's
version; a hot reload's new bundle loads its own. A bundle served on "tf" reuses its model.
The heat map is the bundle's code/ too (its models/common/explain.py). bench/explain.py
measures the cost against /predict.
"""

import base64
import io
import threading
from collections import OrderedDict
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from PIL import Image as PILImage
from starlette.concurrency import run_in_threadpool

from deployment.server.door import pinned
from deployment.server.errors import ApiError
from deployment.server.human import _image_bytes, answer
from deployment.server.predict import Inputs, predict

MIN_SIDE = 224  # pixels: a 28x28 input is drawn 8x larger, each pixel a block
KEPT = 2  # bundles whose Keras model stays loaded: the served one and the one before it


class Explainers:
    """The bundle's explain.Explainer per bundle version, loaded on first use under a lock;
    at most KEPT of them (the least recently used is dropped)."""

    def __init__(self) -> None:
        self._loaded: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, bundle):
        """The bundle's explainer (its code/'s explain.Explainer); blocks while it loads.

        Raises:
            ApiError: 501 when TensorFlow is missing or the bundle cannot explain.
        """
        with self._lock:
            if bundle.version not in self._loaded:
                self._loaded[bundle.version] = _load(bundle)
                while len(self._loaded) > KEPT:
                    self._loaded.popitem(last=False)
            self._loaded.move_to_end(bundle.version)
            return self._loaded[bundle.version]


def _load(bundle):
    module = getattr(bundle, "explain", None)
    if module is None or not hasattr(bundle.serving, "load"):
        raise ApiError(501, f"bundle {bundle.version} was exported before explanations")
    try:
        model = getattr(bundle.predictor, "model", None)  # served on tf: already loaded
        if model is None:
            model = bundle.serving.load(bundle.path, "tf").model
        return module.Explainer(model)
    except ModuleNotFoundError as err:  # the serve-only image: onnxruntime, no TensorFlow
        if (err.name or "").split(".")[0] not in ("tensorflow", "keras"):
            raise
        raise ApiError(501, "explanations need TensorFlow, which is not installed here") from None


def heatmap_png(overlaid: np.ndarray) -> bytes:
    """The uint8 [h, w, 3] overlay as a PNG, enlarged by a whole factor to MIN_SIDE."""
    image = PILImage.fromarray(overlaid, "RGB")
    factor = -(-MIN_SIDE // max(image.size))
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), PILImage.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def explained(bundle, explainer, image: np.ndarray, probs: np.ndarray, wanted: str | None):
    """(the /predict answer plus the explanation, the heat map PNG) for one uint8 image
    [h, w, C] and its served scores [1, K]; `wanted` a label, or None: the answer's."""
    best, chosen, label, score = answer(probs, bundle)
    index = bundle.labels.index(wanted or label)
    heat = explainer(image[None], index)[0]
    png = heatmap_png(bundle.explain.overlay(image, heat))
    return {
        "model_name": bundle.name,
        "label": label,
        "score": score,
        "labels_present": chosen,
        "top_k": [{"label": lab, "index": i, "score": s} for s, i, lab in best],
        "method": explainer.method,
        "layer": explainer.layer,
        "explained": {"label": bundle.labels[index], "index": index},
        "size": list(image.shape[:2]),
    }, png


def add_routes(app: FastAPI, state) -> None:
    """Add POST /explain to app; state is deployment.server.lifecycle.State."""
    explainers = Explainers()

    @app.post("/explain")
    async def explain(request: Request):
        bundle = pinned(request).choose(request.query_params.get("model"))
        wanted = request.query_params.get("label")
        if wanted is not None and wanted not in bundle.labels:
            raise ApiError(400, f"unknown label {wanted!r}; choose from {bundle.labels}")
        data = await _image_bytes(request)
        seen = await predict(state, bundle, Inputs(encoded=[data]))  # as /predict: OOD, metrics

        def run():  # gradients: in a worker thread (the first call loads TensorFlow)
            explainer = explainers.get(bundle)
            return explained(bundle, explainer, seen.images[0], seen.scores, wanted)

        result, png = await run_in_threadpool(run)
        if "image/png" in request.headers.get("accept", ""):
            headers = {
                "X-Label": quote(result["label"]),
                "X-Score": f"{result['score']:.7g}",
                "X-Explained": quote(result["explained"]["label"]),
                "X-Method": result["method"],
                "X-Model-Version": bundle.version,
            }
            return Response(png, media_type="image/png", headers=headers)
        encoded = base64.b64encode(png).decode()
        return state.reply({**result, "heatmap_png": encoded}, bundle=bundle)
