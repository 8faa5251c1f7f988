"""Deployment test: load the selected bundle in a clean process and check its predictions.

The child process runs `python -E -s <bundle>/code`: its import path holds the bundle's own
code/ and the installed packages, never the repo. On each backend (tf: model.keras; onnx:
model.onnx on onnxruntime) it must:
  - predict the raw test files of eval/samples.json (a seeded sample that the shard stage
    embedded, any size and mode) as the evaluate stage did: the same model by
    data_processing.core.agreement (float32's rounding allowed, top-1 labels equal);
  - report labels in the order of labels.json (and of the evaluate stage);
  - accept any size and mode (L, RGB, RGBA) and return a probability vector;
  - load no project module from outside code/.
It reads only the production folder, never datasets/. Writes the result (kept in git, not a
metric: a check, not a score), {dataset: {"deploy_test": {model, passed, tf: {...}, onnx:
{...}}}}; exits non-zero when it fails.

Run: python -m deployment.release.deploy_test deployment/digits/production.json \
        deployment/digits/deploy_test.json
"""

import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from data_processing.core import agreement, cli
from data_processing.core.errors import CheckError, DataError, exit_on_error
from data_processing.core.io import write_json

BACKENDS = ("tf", "onnx")
VARIANTS = {
    "L": (8, 8),
    "RGB": (8, 8),
    "RGBA": (8, 8),
    "L-5x7": (5, 7),
    "RGB-64x64": (64, 64),
    "RGBA-300x200": (300, 200),
}


def write_samples(samples: dict, out_dir: Path) -> dict[Path, list[float]]:
    """Write the embedded raw test files; return {path: recorded probabilities}."""
    expected = {}
    for i, image in enumerate(samples["images"]):
        path = out_dir / f"sample-{i:03d}{Path(image['file_name']).suffix}"
        path.write_bytes(base64.b64decode(image["data"]))
        expected[path] = image["probs"]
    return expected


def write_variants(source: Path, out_dir: Path) -> dict[str, Path]:
    """Write the source image in several modes and sizes; return {variant: path}."""
    paths = {}
    with PILImage.open(source) as im:
        for name, size in VARIANTS.items():
            mode = name.split("-")[0]
            path = out_dir / f"variant-{name}.png"
            im.convert(mode).resize(size, PILImage.BILINEAR).save(path)
            paths[name] = path
    return paths


def run_bundle(bundle: Path, images: list[Path], work: Path, backend: str) -> dict:
    """Predict `images` with the bundle in a fresh process; return its JSON output."""
    (work / "images.json").write_text(json.dumps([str(p) for p in images]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    code = str(bundle.resolve() / "code")
    cmd = [sys.executable, "-B", "-E", "-s", code, "--bundle", str(bundle.resolve())]
    cmd += ["--images", "images.json", "--out", f"out-{backend}.json", "--backend", backend]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CheckError(
            bundle,
            f"a bundle that loads in a clean process ({backend} backend)",
            found=proc.stderr.strip().splitlines()[-1] if proc.stderr else "no output",
        )
    return json.loads((work / f"out-{backend}.json").read_text())


def compare(
    expected: dict[Path, list[float]], got: dict, labels: list[str], categories: list[str]
) -> dict:
    """Return the check results of one backend (all must hold for `passed`)."""
    preds = got["predictions"]
    ref = np.array(list(expected.values()))
    out = np.array([preds[str(p)] for p in expected])
    variants = np.array([v for k, v in preds.items() if Path(k).name.startswith("variant-")])
    same = agreement.compare(ref, out)
    checks = {
        "samples": len(expected),
        **same.record(),
        "labels_match": got["labels"] == labels == categories,
        "variants_ok": bool(
            len(variants) == len(VARIANTS)
            and np.isfinite(variants).all()
            and np.allclose(variants.sum(1), 1.0, atol=1e-4)
        ),
        "clean_imports": not got["foreign_modules"],
    }
    checks["passed"] = bool(
        same.passed
        and checks["labels_match"]
        and checks["variants_ok"]
        and checks["clean_imports"]
    )
    return checks


def deploy_test(bundle: Path, samples: dict) -> dict:
    """Run the bundle on both backends in clean processes; return the checks per backend."""
    labels = json.loads((bundle / "labels.json").read_text())
    if not samples["images"]:
        raise DataError(bundle, "eval samples: raw test files", found="none")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        expected = write_samples(samples, Path(tmp))
        variants = write_variants(next(iter(expected)), Path(tmp))
        for backend in BACKENDS:
            got = run_bundle(bundle, [*expected, *variants.values()], Path(tmp), backend)
            results[backend] = compare(expected, got, labels, samples["categories"])
    return results


@exit_on_error
def main() -> None:
    pointer_path, out_path = cli.paths(
        __doc__,
        ("pointer", "a production pointer (deployment/<dataset>/production.json)"),
        ("out", "where the results are written (deployment/<dataset>/deploy_test.json)"),
    )
    pointer = json.loads(pointer_path.read_text())
    bundle = Path(pointer["bundle"])
    samples_path = Path(pointer.get("eval_samples") or bundle / "eval" / "samples.json")
    if not samples_path.is_file():
        raise DataError(samples_path, "the promoted cell's eval samples (dvc repro writes them)")
    results = deploy_test(bundle, json.loads(samples_path.read_text()))
    passed = all(r["passed"] for r in results.values())
    checked = {"model": pointer["name"], "passed": passed, **results}
    dataset = pointer.get("dataset") or pointer["name"]
    write_json(out_path, {dataset: {"deploy_test": checked}})
    for backend, checks in results.items():
        verdict = "passed" if checks["passed"] else "FAILED"
        print(f"deploy_test: {pointer['name']} ({backend}): {verdict} {checks}")
    if not passed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
