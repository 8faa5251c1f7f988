"""The servers users would pick instead of ours, each wrapping a bundle's model.onnx the way
its documentation shows, for bench/peers.py. Runs in the peer's own venv (KServe, MLServer)
or ours (naive FastAPI): it imports nothing from this repository.

Each serves OIP v2 `POST /v2/models/<name>/infer` with one input:
    pixels  UINT8 [N, H, W, C]: the model's input as is
    image   BYTES [N]: base64 JPEG/PNG text in JSON; decoded with Pillow (JPEG draft mode to
            the model's size), converted to L or RGB, resized bilinear to the model's size
and answers "probabilities" FP32 [N, K]: onnxruntime (one intra-op and one inter-op thread,
as our server's model threads run) with the bundle's temperature applied
(softmax(log p / T), calibration.json), the same scores our server gives.

    kserve    a kserve.Model, kserve.ModelServer (its documented custom-model form)
    mlserver  an mlserver.MLModel custom runtime, `mlserver start` (in-process unless
              --workers > 1: parallel_workers)
    naive     FastAPI on uvicorn, a plain `def` route (the threadpool), no batching

Run: <venv>/bin/python bench/peer_servers.py kserve --bundle B --name N --port P [--workers W]
"""

import argparse
import base64
import io
import json
import sys
import uuid
from pathlib import Path

import numpy as np

_ARGV = sys.argv
if __name__ in ("__main__", "__mp_main__"):  # run as a server: kserve parses sys.argv on import
    sys.argv = sys.argv[:1]


class OnnxModel:
    """model.onnx on onnxruntime with the bundle's temperature; prepares encoded images."""

    def __init__(self, bundle: Path) -> None:
        import onnxruntime as ort

        self.bundle = bundle
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(bundle / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name
        spec = json.loads((bundle / "params.json").read_text())["spec"]
        self.channels, self.size = spec["channels"], tuple(spec["image_size"])
        calibration = bundle / "calibration.json"
        found = json.loads(calibration.read_text()) if calibration.is_file() else {}
        self.temperature = float(found.get("temperature") or 1.0)

    def __reduce__(self):  # KServe --workers N spawns its workers with the models: reload there
        return (OnnxModel, (self.bundle,))

    def tensor(self, pixels: np.ndarray) -> np.ndarray:
        probs = self.session.run(None, {self.input: pixels.astype(np.uint8, copy=False)})[0]
        if self.temperature == 1.0:
            return probs.astype(np.float32)
        logits = np.log(np.maximum(probs.astype(np.float64), 1e-12)) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        scores = np.exp(logits)
        return (scores / scores.sum(axis=1, keepdims=True)).astype(np.float32)

    def decode(self, data: bytes) -> np.ndarray:
        from PIL import Image

        im = Image.open(io.BytesIO(data))
        height, width = self.size
        if im.format == "JPEG":
            im.draft(im.mode, (width, height))
        im = im.convert("L" if self.channels == 1 else "RGB")
        if im.size != (width, height):
            im = im.resize((width, height), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
        return arr[..., None] if self.channels == 1 else arr

    def infer(self, name: str, datatype: str, shape: list[int], data) -> np.ndarray:
        """One OIP v2 input's scores: pixels as a tensor, image as base64 encoded files."""
        if name == "image":
            texts = [d.decode() if isinstance(d, bytes) else d for d in np.ravel(data)]
            return self.tensor(np.stack([self.decode(base64.b64decode(t)) for t in texts]))
        return self.tensor(np.asarray(data, dtype=np.uint8).reshape(shape))


try:  # module level: KServe's --workers processes are spawned and must find the class
    import kserve
    from kserve import InferOutput, InferRequest, InferResponse

    class KServePeer(kserve.Model):
        def __init__(self, name: str, bundle: Path) -> None:
            super().__init__(name)
            self.model = OnnxModel(bundle)
            self.ready = True

        def predict(self, payload: InferRequest, headers=None, response_headers=None):
            tensor = payload.inputs[0]
            probs = self.model.infer(tensor.name, tensor.datatype, tensor.shape, tensor.data)
            out = InferOutput("probabilities", list(probs.shape), "FP32")
            out.set_data_from_numpy(probs, binary_data=False)
            response_id = payload.id or uuid.uuid4().hex  # as KServe's examples do
            return InferResponse(response_id, self.name, [out])

except ImportError:  # the mlserver and naive venvs
    pass


def kserve_main(args: argparse.Namespace) -> None:
    kserve.ModelServer(
        http_port=args.port,
        grpc_port=args.port + 1,
        workers=args.workers,
        enable_grpc=False,
        enable_latency_logging=False,
    ).start([KServePeer(args.name, args.bundle)])


try:  # MLServer imports this module by name from the model folder (model-settings.json)
    from mlserver import MLModel
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceRequest, InferenceResponse

    class MLServerPeer(MLModel):
        async def load(self) -> bool:
            self.model = OnnxModel(Path(self.settings.parameters.uri))
            return True

        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            tensor = payload.inputs[0]
            probs = self.model.infer(tensor.name, tensor.datatype, tensor.shape, tensor.data.root)
            out = NumpyCodec.encode_output("probabilities", probs)
            return InferenceResponse(model_name=self.name, id=payload.id, outputs=[out])

except ImportError:  # the kserve and naive venvs
    pass


def mlserver_main(args: argparse.Namespace) -> None:
    """Write settings.json and the model's folder under --work, then `mlserver start`."""
    import subprocess

    work, model_dir = args.work, args.work / args.name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "peer_servers.py").write_text(Path(__file__).read_text())
    settings = {
        "http_port": args.port,
        "grpc_port": args.port + 1,
        "metrics_port": args.port + 2,
        "parallel_workers": args.workers if args.workers > 1 else 0,
        "debug": False,
        "host": "127.0.0.1",
        "metrics_dir": str(work / "metrics"),  # not ./.metrics in the repository
    }
    (work / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": args.name,
        "implementation": "peer_servers.MLServerPeer",
        "parameters": {"uri": str(args.bundle.resolve())},
    }
    (model_dir / "model-settings.json").write_text(json.dumps(model))
    mlserver = Path(sys.executable).with_name("mlserver")
    sys.exit(subprocess.call([str(mlserver), "start", str(work)]))


def naive_app(bundle: Path, name: str):
    from fastapi import Body, FastAPI

    app, model = FastAPI(), OnnxModel(bundle)

    @app.get("/v2/health/ready")
    def ready() -> dict:
        return {"ready": True}

    @app.post(f"/v2/models/{name}/infer")
    def infer(body: dict = Body(...)) -> dict:  # noqa: B008 (FastAPI's own form)
        tensor = body["inputs"][0]
        probs = model.infer(tensor["name"], tensor["datatype"], tensor["shape"], tensor["data"])
        out = {"name": "probabilities", "datatype": "FP32", "shape": list(probs.shape)}
        return {"model_name": name, "outputs": [{**out, "data": probs.ravel().tolist()}]}

    return app


def naive_main(args: argparse.Namespace) -> None:
    import uvicorn

    if args.workers > 1:  # uvicorn's workers import the app by name: pass the bundle on
        import os

        os.environ["PEER_BUNDLE"], os.environ["PEER_NAME"] = str(args.bundle), args.name
        uvicorn.run(
            "peer_servers:from_env",
            factory=True,
            host="127.0.0.1",
            port=args.port,
            workers=args.workers,
            log_level="warning",
            app_dir=str(Path(__file__).parent),
        )
    else:
        uvicorn.run(
            naive_app(args.bundle, args.name),
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
        )


def from_env():
    import os

    return naive_app(Path(os.environ["PEER_BUNDLE"]), os.environ["PEER_NAME"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("kserve", "mlserver", "naive"))
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--work", type=Path, help="mlserver: a folder for its settings")
    args = parser.parse_args(_ARGV[1:])
    {"kserve": kserve_main, "mlserver": mlserver_main, "naive": naive_main}[args.kind](args)


if __name__ == "__main__":
    main()
