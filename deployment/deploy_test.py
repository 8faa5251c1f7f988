"""Deployment test: load the selected bundle in a clean process and check its predictions.

The child process runs `python -E -s <bundle>/code`: its import path holds the bundle's own
code/ and the installed packages, never the repo. It must:
  - predict a fixed, seeded sample of raw test images exactly as the evaluate stage did;
  - report labels in the order of labels.json (and of the evaluate stage);
  - accept any size and mode (L, RGB, RGBA) and return a probability vector;
  - load no project module from outside code/.
Writes the result as a metric, deployment/deploy_test.json; exits non-zero when it fails.

Run: python -m deployment.deploy_test deployment/production.json deployment/deploy_test.json
"""

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from data_processing.errors import DataError, exit_on_error
from data_processing.io import write_json
from data_processing.params import BaseParams, Params, load_params

RAW = Path("datasets/raw")
ATOL = 1e-5  # evaluate rounds probabilities to 1e-7; batch size changes the last bits only
VARIANTS = {
    "L": (8, 8),
    "RGB": (8, 8),
    "RGBA": (8, 8),
    "L-5x7": (5, 7),
    "RGB-64x64": (64, 64),
    "RGBA-300x200": (300, 200),
}


class DeployTestParams(Params):
    n_samples: int = 32


def sample(file_names: list[str], n: int, seed: int) -> list[str]:
    """A fixed, seeded sample of n file names (sorted)."""
    return sorted(random.Random(seed).sample(sorted(file_names), min(n, len(file_names))))


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


def run_bundle(bundle: Path, images: list[Path], work: Path) -> dict:
    """Predict `images` with the bundle in a fresh process; return its JSON output."""
    (work / "images.json").write_text(json.dumps([str(p) for p in images]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    cmd = [
        sys.executable,
        "-B",
        "-E",
        "-s",
        str(bundle.resolve() / "code"),
        "--bundle",
        str(bundle.resolve()),
        "--images",
        "images.json",
        "--out",
        "out.json",
    ]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DataError(
            bundle,
            "a bundle that loads in a clean process",
            found=proc.stderr.strip().splitlines()[-1] if proc.stderr else "no output",
        )
    return json.loads((work / "out.json").read_text())


def compare(
    expected: dict, got: dict, samples: list[str], raw_dir: Path, labels: list[str]
) -> dict:
    """Return the check results (all must hold for `passed`)."""
    preds = got["predictions"]
    ref = np.array([expected["predictions"][f] for f in samples])
    out = np.array([preds[str(raw_dir / f)] for f in samples])
    variants = np.array([v for k, v in preds.items() if Path(k).name.startswith("variant-")])
    checks = {
        "samples": len(samples),
        "label_agreement": float((ref.argmax(1) == out.argmax(1)).mean()),
        "max_abs_diff": float(np.abs(ref - out).max()),
        "labels_match": got["labels"] == labels == expected["categories"],
        "variants_ok": bool(
            len(variants) == len(VARIANTS)
            and np.isfinite(variants).all()
            and np.allclose(variants.sum(1), 1.0, atol=1e-4)
        ),
        "clean_imports": not got["foreign_modules"],
    }
    checks["passed"] = bool(
        checks["label_agreement"] == 1.0
        and checks["max_abs_diff"] <= ATOL
        and checks["labels_match"]
        and checks["variants_ok"]
        and checks["clean_imports"]
    )
    return checks


@exit_on_error
def main() -> None:
    pointer_path, out_path = Path(sys.argv[1]), Path(sys.argv[2])
    pointer = json.loads(pointer_path.read_text())
    bundle, raw_dir = Path(pointer["bundle"]), (RAW / pointer["dataset"]).resolve()
    expected = json.loads(Path(pointer["eval_predictions"]).read_text())
    samples = sample(
        list(expected["predictions"]),
        load_params("deploy_test", DeployTestParams).n_samples,
        load_params("base", BaseParams).seed,
    )
    labels = json.loads((bundle / "labels.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        variants = write_variants(raw_dir / samples[0], Path(tmp))
        got = run_bundle(
            bundle, [raw_dir / f for f in samples] + list(variants.values()), Path(tmp)
        )
    checks = compare(expected, got, samples, raw_dir, labels)
    write_json(out_path, {"deploy_test": {"model": pointer["name"], **checks}})
    print(f"deploy_test: {pointer['name']}: {'passed' if checks['passed'] else 'FAILED'} {checks}")
    if not checks["passed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
