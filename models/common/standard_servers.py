"""The bundle's model in the standard servers: a Triton model repository and KServe manifests.

models/export.py calls `write` once model.onnx is written and checked:

    triton/<name>/config.pbtxt  inputs, outputs and batching, read from model.onnx
    triton/<name>/1/model.onnx  a copy of model.onnx (Triton's model version 1)
    triton/<name>/labels.txt    labels.json, one per line (Triton's classification extension)
    kserve/custom.yaml          InferenceService: our server's image (deployment/Dockerfile.serve)
    kserve/triton.yaml          InferenceService: triton/ on KServe's runtime kserve-tritonserver

<name> is the cell (lineage.json "cell"), the name our own server answers to, so clients call
/v2/models/<name>/infer on all three. Triton runs the ONNX graph as it is: a UINT8
[N, H, W, C] tensor of decoded pixels, any H and W (the graph resizes). Decoding PNG/JPEG and
the grayscale/RGB conversion are the client's job there; our server does them with code/.
"""

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from data_processing.core.errors import CheckError
from data_processing.core.io import write_text
from models.common.yaml_dump import dump

# The largest batch Triton forms. export's ONNX check runs up to CHECK_IMAGES (64) at once.
MAX_BATCH_SIZE = 64
QUEUE_DELAY_US = 2000  # as long as our server's --batch-timeout-ms default (2 ms)
LABELS = "labels.txt"
IMAGE = "reprovision-serve"  # deployment/Dockerfile.serve, tagged with the model version
PORT = 8080  # the port Dockerfile.serve exposes, and its health check's
STORAGE = "s3://BUCKET/reprovision"  # a placeholder: where triton/ is uploaded (see header)

# ONNX element type -> Triton data type (TYPE_ is prefixed), for the types both have.
TRITON_TYPES = {
    "FLOAT": "FP32", "DOUBLE": "FP64", "FLOAT16": "FP16", "BFLOAT16": "BF16",
    "UINT8": "UINT8", "UINT16": "UINT16", "UINT32": "UINT32", "UINT64": "UINT64",
    "INT8": "INT8", "INT16": "INT16", "INT32": "INT32", "INT64": "INT64",
    "BOOL": "BOOL", "STRING": "STRING",
}  # fmt: skip


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str  # Triton's, e.g. TYPE_FP32
    dims: tuple[int, ...]  # the graph's, batch dim included; -1 where a dim is free


def _tensor(value, path: Path) -> Tensor:
    import onnx

    tensor, kind = value.type.tensor_type, value.type.WhichOneof("value")
    if kind != "tensor_type" or not tensor.HasField("shape"):
        found = "a tensor of unknown rank" if kind == "tensor_type" else kind or "no type"
        expected = "graph inputs and outputs that are tensors of known rank"
        raise CheckError(path, expected, field=value.name, found=found)
    onnx_type = onnx.TensorProto.DataType.Name(tensor.elem_type)
    if onnx_type not in TRITON_TYPES:
        expected = f"an element type Triton serves ({', '.join(TRITON_TYPES)})"
        raise CheckError(path, expected, field=value.name, found=onnx_type)
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
    return Tensor(value.name, f"TYPE_{TRITON_TYPES[onnx_type]}", dims)


def onnx_tensors(path: Path) -> tuple[list[Tensor], list[Tensor]]:
    """The graph's inputs (less its initializers) and outputs, as Triton declares them."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {init.name for init in graph.initializer}  # some exporters list them as inputs
    inputs = [_tensor(v, path) for v in graph.input if v.name not in weights]
    return inputs, [_tensor(v, path) for v in graph.output]


def max_batch_size(tensors: list[Tensor], largest: int = MAX_BATCH_SIZE) -> int:
    """`largest` when every tensor's first dim is free (a batch Triton may fill), else 0:
    Triton then passes each request as it is, with the graph's full dims."""
    return largest if all(t.dims and t.dims[0] == -1 for t in tensors) else 0


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _entries(tensors: list[Tensor], batched: bool, label_file: str | None) -> list[str]:
    lines = []
    for i, t in enumerate(tensors):
        dims = t.dims[1:] if batched else t.dims  # Triton adds the batch dim itself
        lines += ["  {", f"    name: {_quote(t.name)}", f"    data_type: {t.data_type}"]
        lines.append(f"    dims: [ {', '.join(map(str, dims or (1,)))} ]")
        if not dims:  # a per-item scalar: Triton wants dims [1], reshaped to []
            lines.append("    reshape: { shape: [ ] }")
        if label_file:
            lines.append(f"    label_filename: {_quote(label_file)}")
        lines.append("  }," if i < len(tensors) - 1 else "  }")
    return lines


def triton_config(
    name: str, inputs: list[Tensor], outputs: list[Tensor], label_file: str | None = None
) -> str:
    """config.pbtxt (protobuf text) for model.onnx on Triton's onnxruntime backend.

    Args:
        name: the model's name, also its folder in the model repository.
        inputs: the graph's inputs (`onnx_tensors`).
        outputs: the graph's outputs.
        label_file: a file in the model's folder naming the output's classes, or None.

    Returns:
        The config: dynamic batching up to MAX_BATCH_SIZE when every dim 0 is free, else none.
    """
    batch = max_batch_size([*inputs, *outputs])
    lines = [f"name: {_quote(name)}", 'platform: "onnxruntime_onnx"', f"max_batch_size: {batch}"]
    lines += ["input [", *_entries(inputs, batch > 0, None), "]"]
    lines += ["output [", *_entries(outputs, batch > 0, label_file), "]"]
    if batch:  # Triton refuses a dynamic batcher on a model that cannot batch
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {QUEUE_DELAY_US}", "}"]
    return "\n".join(lines) + "\n"


def write_triton(
    onnx_path: Path, repository: Path, name: str, labels: list[str]
) -> tuple[list[Tensor], list[Tensor]]:
    """Write the model folder `repository`/<name>/ for `onnx_path`.

    Args:
        onnx_path: the bundle's model.onnx.
        repository: the model repository (the bundle's triton/).
        name: the model's name (the cell).
        labels: output index -> class (labels.json).

    Returns:
        The inputs and outputs config.pbtxt declares (`onnx_tensors`).
    """
    folder = repository / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    # A copy, not a hard link: DVC stores equal bytes once in its cache whatever the workspace
    # holds and relinks outputs by its own cache.type, so a link saves nothing after commit and
    # ties the two paths until then; copies of the bundle (s3 sync, docker COPY) drop it anyway.
    shutil.copyfile(onnx_path, folder / "1" / "model.onnx")
    inputs, outputs = onnx_tensors(onnx_path)
    label_file = None
    if len(outputs) == 1 and outputs[0].dims[-1:] == (len(labels),):  # one score per class
        label_file = LABELS
        write_text(folder / LABELS, "".join(f"{label}\n" for label in labels))
    write_text(folder / "config.pbtxt", triton_config(name, inputs, outputs, label_file))
    return inputs, outputs


def resource_name(name: str) -> str:
    """`name` as a Kubernetes resource name (DNS-1035: a-z, 0-9 and '-', a letter first)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return slug if slug[:1].isalpha() else f"m-{slug}"


def _service(name: str, version: str, predictor: dict) -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "labels": {"app": "reprovision", "version": version}},
        "spec": {"predictor": predictor},
    }


def _probe(path: str, delay: int) -> dict:
    timing = {"initialDelaySeconds": delay, "periodSeconds": 10, "failureThreshold": 3}
    return {"httpGet": {"path": path, "port": PORT}, **timing}


def kserve_custom(name: str, version: str, bundle: str) -> str:
    """An InferenceService running our server image built from `bundle` (a custom predictor)."""
    container = {
        "name": "kserve-container",  # the name KServe gives a predictor's main container
        "image": f"{IMAGE}:{version}",
        "ports": [{"containerPort": PORT, "protocol": "TCP"}],
        # Live while it loads; ready once the model is loaded and warmed up (about 10 s on TF).
        "readinessProbe": _probe("/v2/health/ready", 2),
        "livenessProbe": _probe("/v2/health/live", 10),
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    }
    header = [
        f"# KServe InferenceService: {name} (version {version}) on our own server.",
        "# Build the image and push it (with a registry, prefix this tag and `image`):",
        f"#   docker build -f deployment/Dockerfile.serve --build-arg BUNDLE={bundle} \\",
        f"#     -t {IMAGE}:{version} .",
        f"# Clients: POST /v2/models/{name}/infer (PNG/JPEG bytes or UINT8 pixels).",
    ]
    service = _service(resource_name(name), version, {"containers": [container]})
    return "\n".join(header) + "\n" + dump(service)


def kserve_triton(name: str, version: str, bundle: str, inputs: list[Tensor]) -> str:
    """An InferenceService running `bundle`'s triton/ repository on KServe's Triton runtime."""
    storage = f"{STORAGE}/{name}/{version}/triton"
    model = {
        "modelFormat": {"name": "onnx"},
        "runtime": "kserve-tritonserver",
        "protocolVersion": "v2",
        "storageUri": storage,  # the repository: Triton serves each folder in it by its name
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    }
    declared = ", ".join(
        f"{t.name} {t.data_type.removeprefix('TYPE_')} {list(t.dims)}" for t in inputs
    )
    header = [
        f"# KServe InferenceService: {name} (version {version}) on Triton's onnxruntime backend.",
        "# BUCKET is a placeholder: replace it here and below, upload the repository there:",
        f"#   aws s3 sync {bundle}/triton {storage}",
        "# The pod reads S3 with its service account's credentials (KServe's S3 secret).",
        f"# Clients: POST /v2/models/{name}/infer with {declared} (decoded pixels).",
    ]
    service = _service(f"{resource_name(name)}-triton", version, {"model": model})
    return "\n".join(header) + "\n" + dump(service)


def write(out_dir: Path, name: str, labels: list[str], bundle: Path) -> None:
    """Write triton/ and kserve/ into the bundle `out_dir` (its model.onnx already written).

    Args:
        out_dir: the bundle folder being written.
        name: the model's name (the cell), the same on every server.
        labels: output index -> class (labels.json).
        bundle: where the bundle will live, as the manifests' comments tell people to use it.
    """
    version = hashlib.sha256((out_dir / "model.keras").read_bytes()).hexdigest()[:12]  # as served
    inputs, _ = write_triton(out_dir / "model.onnx", out_dir / "triton", name, labels)
    where = bundle.as_posix()
    write_text(out_dir / "kserve/custom.yaml", kserve_custom(name, version, where))
    write_text(out_dir / "kserve/triton.yaml", kserve_triton(name, version, where, inputs))
