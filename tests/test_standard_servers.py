"""The bundle's triton/ and kserve/ (models/common/standard_servers.py), on real files.

A tiny cnn is built, converted and checked by the project's own export_onnx, and given the
triton/ and kserve/ export writes. config.pbtxt is parsed with Triton's own ModelConfig
proto (tritonclient) and compared with the graph as `onnx` reads it; 1/model.onnx runs a batch
in onnxruntime with the declared dims; the manifests pass yamllint --strict and say what
deployment/Dockerfile.serve builds.
"""

import hashlib
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from conftest import BIN, ROOT, sh
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2

import models
from data_processing.core.errors import CheckError
from data_processing.core.params import load_params
from models.common import standard_servers
from models.common.onnx_export import export_onnx
from models.common.spec import ModelSpec

NAME = "tiny-cnn-quick"  # the cell: the model's name on every server
LABELS = ["bar", "column", "diagonal"]
BUNDLE = Path("models/runs/tiny-cnn-quick/bundle")
TRITON_TYPES = {TensorProto.UINT8: "TYPE_UINT8", TensorProto.FLOAT: "TYPE_FP32"}  # Triton docs
KIND = ("serving.kserve.io/v1beta1", "InferenceService")
NUMPY_TYPES = {"TYPE_UINT8": np.uint8, "TYPE_FP32": np.float32}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.keras and model.onnx of a fresh 3-class cnn, then what export adds for servers."""
    out = tmp_path_factory.mktemp("bundle")
    arch = models.get("cnn")
    params = load_params("models.cnn", arch.Params, ROOT / "params.yaml")
    model = arch.build(ModelSpec(channels=1, num_classes=3, image_size=(16, 16)), params)
    model.save(out / "model.keras")
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 1), dtype=np.uint8)
    export_onnx(model, out / "model.onnx", images)
    standard_servers.write(out, NAME, LABELS, BUNDLE)
    return out


def read_config(folder: Path) -> model_config_pb2.ModelConfig:
    """config.pbtxt through Triton's schema: an unknown field or enum value fails here."""
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def graph_tensors(path: Path) -> tuple[list, list]:
    """(name, elem type, dims with -1 for a free dim) of the graph's inputs and outputs."""
    graph = onnx.load(str(path)).graph
    weights = {init.name for init in graph.initializer}

    def row(value) -> tuple:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        return value.name, tensor.elem_type, dims

    inputs = [row(v) for v in graph.input if v.name not in weights]
    return inputs, [row(v) for v in graph.output]


def declared(entries) -> list:
    return [(e.name, model_config_pb2.DataType.Name(e.data_type), list(e.dims)) for e in entries]


def test_config_declares_the_onnx_graph(bundle: Path) -> None:
    folder = bundle / "triton" / NAME
    config = read_config(folder)
    assert (config.name, config.platform) == (NAME, "onnxruntime_onnx")
    assert config.max_batch_size == standard_servers.MAX_BATCH_SIZE > 0
    inputs, outputs = graph_tensors(bundle / "model.onnx")
    assert [dims[0] for *_, dims in inputs + outputs] == [-1, -1]  # a free batch dim: batching
    for entries, tensors in ((config.input, inputs), (config.output, outputs)):
        expected = [(name, TRITON_TYPES[kind], dims[1:]) for name, kind, dims in tensors]
        assert declared(entries) == expected
    assert declared(config.input) == [("images", "TYPE_UINT8", [-1, -1, 1])]  # any H, W
    assert declared(config.output)[0][1:] == ("TYPE_FP32", [3])
    assert config.HasField("dynamic_batching")
    assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 10_000
    assert config.output[0].label_filename == "labels.txt"
    assert (folder / "labels.txt").read_text().splitlines() == LABELS


def test_version_1_is_the_bundles_onnx_and_serves_a_batch(bundle: Path) -> None:
    import onnxruntime as ort

    copy = bundle / "triton" / NAME / "1" / "model.onnx"
    assert copy.read_bytes() == (bundle / "model.onnx").read_bytes()
    config = read_config(copy.parents[1])
    session = ort.InferenceSession(str(copy), providers=["CPUExecutionProvider"])
    sizes = iter([11, 9])  # a free dim takes any size: the graph resizes
    (entry,) = config.input
    shape = [3] + [d if d > 0 else next(sizes) for d in entry.dims]  # Triton's batch of 3
    data_type = model_config_pb2.DataType.Name(entry.data_type)
    batch = np.random.default_rng(1).integers(0, 256, shape).astype(NUMPY_TYPES[data_type])
    (probs,) = session.run([config.output[0].name], {entry.name: batch})
    assert list(probs.shape) == [3, *config.output[0].dims]
    assert probs.dtype == NUMPY_TYPES[model_config_pb2.DataType.Name(config.output[0].data_type)]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def fixed_graph(path: Path, elem_type: int = TensorProto.FLOAT) -> Path:
    """A real ONNX file with a fixed batch of 2 whose weight is also listed as an input (as
    exporters before IR 4 wrote them): y = x + w, x [2, 4], y [2, 4]."""
    x = helper.make_tensor_value_info("x", elem_type, [2, 4])
    w = helper.make_tensor_value_info("w", elem_type, [4])
    y = helper.make_tensor_value_info("y", elem_type, [2, 4])
    weight = helper.make_tensor("w", elem_type, [4], [1.0, 2.0, 3.0, 4.0])
    add = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph([add], "g", [x, w], [y], initializer=[weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_fixed_batch_graph_is_declared_unbatched(tmp_path: Path) -> None:
    model = fixed_graph(tmp_path / "model.onnx")
    standard_servers.write_triton(model, tmp_path / "triton", "fixed", LABELS)
    config = read_config(tmp_path / "triton" / "fixed")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert declared(config.input) == [("x", "TYPE_FP32", [2, 4])]  # full dims, no weight
    assert declared(config.output) == [("y", "TYPE_FP32", [2, 4])]
    assert config.output[0].label_filename == ""  # 4 outputs are not the 3 classes
    assert not (tmp_path / "triton" / "fixed" / "labels.txt").exists()


def test_a_type_triton_lacks_names_the_file_and_tensor(tmp_path: Path) -> None:
    model = fixed_graph(tmp_path / "model.onnx", TensorProto.COMPLEX64)
    with pytest.raises(CheckError) as caught:
        standard_servers.onnx_tensors(model)
    message = str(caught.value)
    assert message.startswith(f"{model}, field 'x': expected an element type Triton serves")
    assert message.endswith("found COMPLEX64")


def yamllint(path: Path) -> None:
    config = "{extends: default, rules: {line-length: disable, document-start: disable}}"
    sh(str(BIN / "yamllint"), "--strict", "-d", config, str(path), cwd=ROOT)


def dockerfile() -> tuple[int, str]:
    """deployment/Dockerfile.serve's EXPOSEd port and its health check's path."""
    text = (ROOT / "deployment/Dockerfile.serve").read_text()
    port = int(re.search(r"^EXPOSE (\d+)$", text, re.M).group(1))
    health = re.search(r"urlopen\('http://127\.0\.0\.1:\d+(/[^']+)'", text).group(1)
    return port, health


def inference_service(bundle: Path, file: str, name: str) -> tuple[dict, str, str]:
    """(the manifest, its text, the bundle's version) of kserve/<file>, linted and checked
    to be an InferenceService named `name`."""
    path = bundle / "kserve" / file
    yamllint(path)
    text = path.read_text()
    service = yaml.safe_load(text)
    assert (service["apiVersion"], service["kind"]) == KIND
    assert service["metadata"]["name"] == name
    return service, text, hashlib.sha256((bundle / "model.keras").read_bytes()).hexdigest()[:12]


def test_kserve_custom_runs_our_server_image(bundle: Path) -> None:
    service, text, version = inference_service(bundle, "custom.yaml", NAME)
    (container,) = service["spec"]["predictor"]["containers"]
    assert container["image"] == f"reprovision-serve:{version}"  # one image, one model version
    port, health = dockerfile()
    assert container["ports"] == [{"containerPort": port, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": health, "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port}
    build = f"--build-arg BUNDLE={BUNDLE.as_posix()}"
    assert build in text and f"-t reprovision-serve:{version} ." in text


def test_kserve_triton_serves_the_repository(bundle: Path) -> None:
    # named beside custom.yaml's service, not over it
    service, text, version = inference_service(bundle, "triton.yaml", f"{NAME}-triton")
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "onnx"}
    assert (model["runtime"], model["protocolVersion"]) == ("kserve-tritonserver", "v2")
    storage = f"s3://BUCKET/reprovision/{NAME}/{version}/triton"
    assert model["storageUri"] == storage
    assert f"aws s3 sync {BUNDLE.as_posix()}/triton {storage}" in text


def test_resource_names_are_dns_labels() -> None:
    assert standard_servers.resource_name("digits-cnn-base") == "digits-cnn-base"
    assert standard_servers.resource_name("2D_Shapes-small_cnn") == "m-2d-shapes-small-cnn"
