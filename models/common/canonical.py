"""Model files with the same bytes for the same model: what makes a clean run reproduce dvc.lock.

Keras writes into model.keras the time it was saved (metadata.json's date_saved), each zip
entry's modification time, and Python object ids (config.json's shared_object_id, memory
addresses). tf2onnx names the nodes and tensors it adds from a process-wide counter, which
other conversions in the process move. The weights themselves are the same from run to run
on one machine: `keras_file` and `onnx_file` rewrite the rest, so two trainings of one cell
give one sha256, and the bundle's version (sha256(model.keras)[:12]) names the model, not
the moment it was saved.
"""

import io
import json
import re
import zipfile
from pathlib import Path

EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
OBJECT_ID = re.compile(rb'"shared_object_id": (\d+)')


def keras_file(path: Path) -> None:
    """Rewrite a .keras file in place: no save date, object ids numbered in order of first
    appearance, entries sorted, stored with one fixed time and mode."""
    path = Path(path)
    with zipfile.ZipFile(path) as source:
        entries = {info.filename: source.read(info) for info in source.infolist()}
    if "metadata.json" in entries:
        metadata = json.loads(entries["metadata.json"])
        metadata.pop("date_saved", None)
        entries["metadata.json"] = json.dumps(metadata, sort_keys=True).encode()
    if "config.json" in entries:
        entries["config.json"] = _renumber(entries["config.json"])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            target.writestr(info, entries[name])
    path.write_bytes(buffer.getvalue())


def _renumber(config: bytes) -> bytes:
    numbers: dict[bytes, bytes] = {}

    def one(match: re.Match) -> bytes:
        found = numbers.setdefault(match[1], str(len(numbers) + 1).encode())
        return b'"shared_object_id": ' + found

    return OBJECT_ID.sub(one, config)


def onnx_file(path: Path, keep: tuple[str, ...] = ()) -> None:
    """Rename an ONNX graph's nodes, internal tensors, initializers and symbolic dims in graph
    order (n<i>_<op>, t<i>_<k>, w<i>, d<i>), sort the initializers, and drop the producer's
    doc string; the graph's inputs and outputs (and `keep`) keep their names."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for node in graph.node
        for a in node.attribute
    ):
        return  # control flow: subgraphs name outer tensors; left as converted
    fixed = {v.name for v in (*graph.input, *graph.output)} | set(keep)
    names: dict[str, str] = {name: name for name in fixed}
    initializers = {tensor.name for tensor in graph.initializer}
    counts = {"w": 0}

    def rename(name: str, new: str) -> str:
        if not name:
            return name
        if name not in names:
            names[name] = new
        return names[name]

    for i, node in enumerate(graph.node):
        for k, name in enumerate(node.input):
            if name in initializers and name not in names:
                counts["w"] += 1
                rename(name, f"w{counts['w']}")
            node.input[k] = rename(name, name)
        for k, name in enumerate(node.output):
            node.output[k] = rename(name, f"t{i}_{k}")
        node.name = f"n{i}_{node.op_type}"
    for tensor in graph.initializer:
        tensor.name = names.get(tensor.name, tensor.name)
    ordered = sorted(graph.initializer, key=lambda t: (len(t.name), t.name))
    del graph.initializer[:]
    graph.initializer.extend(ordered)
    for info in graph.value_info:
        info.name = names.get(info.name, info.name)
    symbols: dict[str, str] = {}  # symbolic dims (unk__120): renamed in order, kept equal
    for info in (*graph.input, *graph.output, *graph.value_info):
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = symbols.setdefault(dim.dim_param, f"d{len(symbols)}")
    model.doc_string = graph.doc_string = ""
    onnx.save(model, str(path))
