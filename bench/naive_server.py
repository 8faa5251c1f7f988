"""The naive serving baseline for bench/serve.py: FastAPI on uvicorn, `model.predict()` per
request, the way a first prototype serves a Keras model.

It loads model.keras with keras (TensorFlow), then answers the same Open Inference Protocol v2
body our server takes (one "pixels" UINT8 [N, H, W, C] input, JSON data) with the
probabilities. The route is a plain `def`, so FastAPI runs each request in its threadpool,
as the FastAPI docs recommend for blocking code. No input checks beyond the shape.

Run: python -m bench.naive_server --model models/runs/digits-cnn-base/bundle/model.keras \
        --name digits-cnn-base --port 8091
"""

import argparse

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException

OUTPUT = "probabilities"


def create_app(model_path: str, name: str) -> FastAPI:
    """The app, with the model loaded (so the server is ready once it listens)."""
    import keras

    model = keras.saving.load_model(model_path, compile=False)
    channels = int(model.inputs[0].shape[-1])
    model.predict(np.zeros((1, 8, 8, channels), np.uint8), verbose=0)  # build predict once
    app = FastAPI()

    @app.get("/v2/health/live")
    @app.get("/v2/health/ready")
    def ready():
        return {"ready": True}

    @app.post("/v2/models/{model_name}/infer")
    def infer(model_name: str, request: dict):  # a dict parameter is the JSON body
        if model_name != name:
            raise HTTPException(404, f"unknown model {model_name!r}")
        tensor = request["inputs"][0]
        batch = np.asarray(tensor["data"], np.uint8).reshape(tensor["shape"])
        probs = model.predict(batch, verbose=0)
        output = {"name": OUTPUT, "datatype": "FP32", "shape": list(probs.shape)}
        return {"model_name": name, "outputs": [{**output, "data": probs.ravel().tolist()}]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model.keras file")
    parser.add_argument("--name", required=True, help="the model name in the URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    app = create_app(args.model, args.name)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
