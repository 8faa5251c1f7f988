"""Open Inference Protocol v2 (KServe / Triton): the infer request and response.

Inputs (exactly one per request):
    image   BYTES [N]           encoded PNG/JPEG/...; in JSON each element is base64 text,
                                with the binary extension the raw bytes (4-byte LE length each)
    pixels  UINT8 [N, H, W, C]  raw pixels, C = the model's channels; any H, W
Output:
    probabilities  FP32 [N, K]; with the classification extension (output parameter
                   "classification": k) BYTES [N, k] of "score:index:label", best first.
Response parameter ood_score: [N], each image's out-of-distribution score (ood.py).

Binary tensor extension: a body with header Inference-Header-Content-Length holds that many
bytes of JSON, then each input with parameters.binary_data_size, in order. Outputs are sent
binary when asked (output parameter binary_data, or request parameter binary_data_output).

The budget (budget.py) is checked as early as the request allows: the JSON's work before
parsing, the image count and model input from the declared shape before any conversion.
"""

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass

import numpy as np
import orjson

from deployment.server.budget import Budget
from deployment.server.errors import ApiError
from deployment.server.predict import Inputs, top_k

OUTPUT = "probabilities"
EXTENSIONS = ["classification", "binary_tensor_data"]
INPUTS = {"image": "BYTES", "pixels": "UINT8"}


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ApiError(400, f"NaN or Inf is not allowed ({text})")
    return value


def parse_body(
    body: bytes, header_length: str | None, budget: Budget | None = None
) -> tuple[dict, bytes]:
    """Split a request into (JSON header, binary tail); 400 when either is malformed, 413
    when its JSON is over the budget's --max-json-values."""
    tail = b""
    if header_length is not None:
        digits = header_length.isascii() and header_length.isdigit()  # not "²" nor "-1"
        if not digits or int(header_length) > len(body):
            raise ApiError(400, f"bad Inference-Header-Content-Length {header_length!r}")
        body, tail = body[: int(header_length)], body[int(header_length) :]
    if budget is not None:
        budget.json(body)
    try:  # orjson refuses NaN, Infinity and overflowing floats itself
        request = orjson.loads(body)
    except orjson.JSONDecodeError:  # json says why, as before; and reads UTF-16/32 bodies
        request = _loads_stdlib(body)
    if not isinstance(request, dict):
        raise ApiError(400, "the request must be a JSON object")
    return request, tail


def _loads_stdlib(body: bytes):
    """The body parsed by json, for its error messages; 400 when malformed."""
    try:
        return json.loads(body, parse_constant=_finite, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, f"malformed JSON: {err}") from None
    except RecursionError:
        raise ApiError(400, "malformed JSON: nested too deeply") from None


def _flatten(data) -> list:
    """The leaves of nested lists, in order; iterative, so nesting depth cannot overflow."""
    leaves, todo = [], [data]
    while todo:
        item = todo.pop()
        if isinstance(item, list):
            todo.extend(reversed(item))
        else:
            leaves.append(item)
    return leaves


def _shape(tensor: dict) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ApiError(400, f"input {tensor.get('name')!r}: shape must be a list of ints >= 0")
    return shape


def _split_bytes_tensor(raw: bytes, count: int) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        where = f"binary BYTES data: element {len(items)}'s length prefix"
        if offset + 4 > len(raw):
            raise ApiError(400, f"{where} is cut short")
        (size,) = struct.unpack_from("<I", raw, offset)
        if (offset := offset + 4) + size > len(raw):
            left = len(raw) - offset
            raise ApiError(400, f"{where} says {size:,} bytes, but {left:,} bytes follow it")
        items.append(raw[offset : offset + size])
        offset += size
    if len(items) != count:
        raise ApiError(400, f"binary BYTES data holds {len(items)} elements, shape says {count}")
    return items


def _tensor_data(tensor: dict, tail: bytes, offset: int) -> tuple[object, int]:
    """Return (JSON data list or raw bytes, new offset into the binary tail)."""
    params = _object(tensor.get("parameters"), f"input {tensor.get('name')!r}'s 'parameters'")
    size = params.get("binary_data_size")
    if size is None:
        if not isinstance(tensor.get("data"), list):
            raise ApiError(400, f"input {tensor.get('name')!r} needs 'data', a list")
        return tensor["data"], offset  # JSON: nested lists, flattened by the caller
    if not isinstance(size, int) or size < 0 or offset + size > len(tail):
        raise ApiError(400, "binary_data_size runs past the end of the body")
    return tail[offset : offset + size], offset + size


def read_inputs(request: dict, tail: bytes, bundle, budget: Budget) -> Inputs:
    """Validate the request's single input within the budget; return its encoded images or
    its uint8 [H, W, C] pixels."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, dict) for t in inputs):
        raise ApiError(400, "'inputs' must be a non-empty list of tensors")
    names = [t.get("name") for t in inputs]
    if unknown := [n for n in names if not isinstance(n, str) or n not in INPUTS]:
        raise ApiError(400, f"unknown input {unknown[0]!r}; expected one of {sorted(INPUTS)}")
    if len(inputs) != 1:
        raise ApiError(400, f"extra inputs {names}: send exactly one of {sorted(INPUTS)}")
    tensor = inputs[0]
    name, datatype, shape = tensor["name"], tensor.get("datatype"), _shape(tensor)
    if datatype != INPUTS[name]:
        raise ApiError(400, f"input {name!r} must be {INPUTS[name]}, got {datatype!r}")
    data, used = _tensor_data(tensor, tail, 0)
    if used != len(tail):
        raise ApiError(400, f"{len(tail) - used} bytes of binary data belong to no input")
    count = math.prod(shape)
    if name == "image":
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or not count:
            raise ApiError(400, f"input 'image' shape must be [N] or [N, 1], N > 0; got {shape}")
        budget.model_input(count, None, bundle)  # before any element is split or decoded
        items = _split_bytes_tensor(data, count) if isinstance(data, bytes) else _flatten(data)
        if len(items) != count:
            raise ApiError(400, f"shape {shape} needs {count} elements, data has {len(items)}")
        return Inputs(encoded=[_b64(v) for v in items])
    return Inputs(arrays=_pixels(data, shape, bundle, budget))


B64_PIECE = 1 << 20  # base64 characters decoded in one call (a multiple of 4)


def _b64(value) -> bytes:
    """A BYTES element's bytes. Long strings decode in 1 MiB pieces: each is one C call that
    holds the GIL, and between them the event loop gets its turn."""
    if isinstance(value, bytes):
        return value  # binary extension: raw bytes
    if not isinstance(value, str):
        raise ApiError(400, "BYTES elements in JSON must be base64 strings")
    try:
        if len(value) <= B64_PIECE:
            return base64.b64decode(value, validate=True)
        if len(value) % 4:
            raise binascii.Error("length is not a multiple of 4")
        pieces = range(0, len(value), B64_PIECE)
        return b"".join(base64.b64decode(value[i : i + B64_PIECE], validate=True) for i in pieces)
    except (binascii.Error, ValueError):
        raise ApiError(400, "BYTES element is not valid base64") from None


def _pixels(data, shape: list[int], bundle, budget: Budget) -> list[np.ndarray]:
    if len(shape) != 4 or shape[3] != bundle.channels or not all(shape):
        raise ApiError(
            400, f"input 'pixels' shape must be [N, H, W, {bundle.channels}], got {shape}"
        )
    count = math.prod(shape)
    budget.model_input(shape[0], (shape[1], shape[2]), bundle)  # before any conversion
    if shape[0] * shape[1] * shape[2] > budget.max_pixels:
        raise ApiError(
            413,
            f"{shape[0]} images of {shape[2]}x{shape[1]} hold {shape[0] * shape[1] * shape[2]:,}"
            f" pixels, over this server's budget of {budget.max_pixels:,} (--max-pixels)",
        )
    if isinstance(data, bytes):
        array = np.frombuffer(data, np.uint8)
    elif (array := _uint8(data)) is None:
        raise ApiError(400, "UINT8 data must be integers in 0..255")
    if array.size != count:
        raise ApiError(400, f"shape {shape} x UINT8 needs {count} values, data has {array.size}")
    return list(array.reshape(shape))


def _uint8(data) -> np.ndarray | None:
    """JSON data (nested lists) as flat uint8, or None unless every leaf is an int in 0..255.

    Flat lists (what tritonclient sends) are type-checked with map(type), in C, not with a
    Python check per value. bool is not int here, as in Triton."""
    if not isinstance(data, list):
        return None
    types = set(map(type, data))
    if list in types:
        data = _flatten(data)
        types = set(map(type, data))
    if not types <= {int} or (data and (min(data) < 0 or max(data) > 255)):
        return None
    return np.array(data, np.uint8)


def _object(value, what: str) -> dict:
    """`value` when it is a JSON object or absent (None: {}); 400 otherwise."""
    if value is not None and not isinstance(value, dict):
        raise ApiError(400, f"{what} must be an object, got {type(value).__name__}")
    return value or {}


def _flag(parameters: dict, name: str, default: bool) -> bool:
    value = parameters.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"parameter {name!r} must be true or false, got {value!r}")
    return value


def _requested_output(request: dict, k_max: int) -> tuple[int, bool]:
    """Return (classification k or 0, binary) for the single output."""
    if "id" in request and not isinstance(request["id"], str):
        raise ApiError(400, "'id' must be a string")
    binary = _flag(_object(request.get("parameters"), "'parameters'"), "binary_data_output", False)
    outputs = request.get("outputs")
    if outputs is None:
        return 0, binary
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise ApiError(400, "'outputs' must be a list of objects")
    if unknown := [o.get("name") for o in outputs if o.get("name") != OUTPUT]:
        raise ApiError(400, f"unknown output {unknown[0]!r}; the model has {[OUTPUT]}")
    k = 0
    for out in outputs:
        p = _object(out.get("parameters"), "output 'parameters'")
        binary = _flag(p, "binary_data", binary)
        k = p.get("classification", 0)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ApiError(400, "classification must be an int >= 0")
    return min(k, k_max), binary


@dataclass
class Infer:
    """One v2 infer request, parsed: its JSON, its binary tail, and the output it asks for."""

    request: dict
    tail: bytes
    k: int  # classification: the k best as "score:index:label"; 0: the probabilities
    binary: bool  # the output as binary tensor data

    def inputs(self, bundle, budget: Budget) -> Inputs:
        """The request's images as sent (read_inputs), within the budget."""
        return read_inputs(self.request, self.tail, bundle, budget)


def parse(body: bytes, header_length: str | None, n_labels: int, budget: Budget) -> Infer:
    """Parse a request body; 400 when it or its requested outputs are malformed, 413 when
    its JSON is over the budget."""
    request, tail = parse_body(body, header_length, budget)
    return Infer(request, tail, *_requested_output(request, n_labels))


def response(infer: Infer, probs: np.ndarray, bundle, ood=None) -> tuple[dict, bytes]:
    """The v2 response to `infer` for probabilities [N, K]: (JSON, binary tail or b"");
    with `ood` (State.screen's results), the images' OOD scores as response parameter
    ood_score [N]."""
    k = infer.k
    if k:
        rows = top_k(probs, bundle.labels, k)
        data = [f"{s:.6f}:{i}:{label}" for row in rows for s, i, label in row]
        out = {"name": OUTPUT, "datatype": "BYTES", "shape": [len(rows), k]}
        raw = b"".join(struct.pack("<I", len(b)) + b for b in (d.encode() for d in data))
    else:
        data = probs.ravel().tolist()  # Python floats, in C
        out = {"name": OUTPUT, "datatype": "FP32", "shape": list(probs.shape)}
        raw = probs.astype("<f4").tobytes()
    if infer.binary:
        out["parameters"] = {"binary_data_size": len(raw)}
    else:
        out["data"], raw = data, b""
    answer = {"model_name": bundle.name, "model_version": bundle.version, "outputs": [out]}
    if ood is not None:
        answer["parameters"] = {"ood_score": [result["score"] for result in ood]}
    if isinstance(infer.request.get("id"), str):
        answer["id"] = infer.request["id"]
    return answer, raw
