"""A photo model's bundle for serving benchmarks, made by the real stages in a scratch project.

Generates an RGB photo dataset (tests/photos.py: 3 classes of stripes on a patch, 160-480 px
JPEGs), then runs normalize, validate, shard, train (1 epoch: the bench measures serving, not
accuracy), evaluate and export for one cell at the given input size, as `dvc repro` would.
The bundle is the export stage's own: model.onnx, code/, calibration, input statistics.

Run (from the repository root): .venv/bin/python -m bench.photo_bundle --model mobilenet
    --size 224 --out /tmp/photo-224   (prints the bundle's path)
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATASET = "photos"
IMAGES = 240  # a fifth held out for test


def _params(project: Path, model: str, size: int) -> None:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["datasets"] = [DATASET]
    data["models"] = {model: data["models"][model]}
    data["hparams"] = {"quick": {**data["hparams"]["quick"], "epochs": 1, "batch_size": 16}}
    data["train"]["image_size"] = [size, size]  # channels: the shard stage reads the photos
    data["shard"]["image_size"] = {DATASET: [size, size]}
    data["evaluate"].update(n_failures=2, profile_repeats=1)
    (project / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def build(project: Path, model: str, size: int) -> Path:
    """Make the scratch project under `project` and return its cell's bundle."""
    from tests.photos import write_photo_dataset  # tests/ is a namespace package

    for package in ("data_processing", "models"):
        ignore = shutil.ignore_patterns("runs", "plots", "metrics", "__pycache__")
        shutil.copytree(ROOT / package, project / package, ignore=ignore)
    _params(project, model, size)
    raw, norm = f"datasets/raw/{DATASET}", f"datasets/normalized/{DATASET}"
    write_photo_dataset(
        project / raw, IMAGES, classes=3, min_side=160, max_side=480, modes=False, workers=2
    )
    cell = (DATASET, model, "quick")
    for module, *args in (
        ("data_processing.normalize", raw, norm),
        ("data_processing.validate", raw, norm, f"datasets/reports/{DATASET}"),
        ("data_processing.shard", raw, norm, f"datasets/shards/{DATASET}"),
        ("models.train", *cell),
        ("models.evaluate", *cell),
        ("models.export", *cell),
    ):
        print(f"photo_bundle: {module} {' '.join(args)}", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, "-m", module, *args], cwd=project)
        if proc.returncode != 0:
            raise SystemExit(f"photo_bundle: {module} failed ({proc.returncode})")
    return project / f"models/runs/{DATASET}-{model}-quick/bundle"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.photo_bundle", description=__doc__)
    parser.add_argument("--model", default="mobilenet", help="an architecture in models/")
    parser.add_argument("--size", type=int, default=224, help="the model's input side")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the project")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out}: folder exists and is not empty")
    args.out.mkdir(parents=True, exist_ok=True)
    print(build(args.out, args.model, args.size))


if __name__ == "__main__":
    main()
