"""Export one cell as a self-contained bundle under models/runs/<cell>/bundle/.

    model.keras      the best checkpoint (canonical bytes: common/canonical.py)
    model.onnx       the same model for onnxruntime, checked on test images (common/onnx_export)
    triton/<cell>/   a Triton model repository for model.onnx: config.pbtxt, 1/model.onnx
    kserve/          InferenceServices: custom.yaml (our server's image), triton.yaml (Triton)
                     (common/standard_servers; <cell> is the model's name on every server)
    labels.json      output index -> class      params.json    resolved params and model spec
    metrics.json     every test figure          lineage.json   code and data hashes, versions
    calibration.json the temperature and per-class cut-offs code/ serves (evaluate fitted them
                     on the validation split; common/postprocess.py)
    input_stats.json the train images' sides, modes, brightness and contrast and the test
                     set's top-score 1st percentile: a server's out-of-distribution score
                     (common/input_stats.py; params export.input_stats_images, 0: none)
    MODEL_CARD.md    what it is, its data, metrics, intended use and limits
    code/            the model file, every project module it imports, serving.py and explain.py;
                     `python -B -E -s code --bundle . ...` predicts with nothing else on the path

Every file is a function of the cell's inputs: no time, commit or timing is written, so a
clean run reproduces the bundle's hash in dvc.lock. A TensorFlow SavedModel (TF Serving) is
not in the bundle, for the same reason: TensorFlow names its functions from a process
counter. `reprovision savedmodel BUNDLE OUT` writes one from the bundle's model.keras.

Run: python -m models.export digits cnn base
"""

import ast
import json
import shutil
import sys
from pathlib import Path

from data_processing.core import cli, progress
from data_processing.core.errors import exit_on_error
from data_processing.core.io import staged_dir, write_json, write_text
from data_processing.core.params import BaseParams, load_params, parse_params, read_params
from models.common import lineage, standard_servers
from models.common.card import model_card
from models.common.data import Shards
from models.common.input_stats import ExportParams, input_stats
from models.common.onnx_export import export_onnx, load_check_images
from models.common.paths import RAW, Cell
from models.common.quiet import import_tensorflow
from models.common.spec import HParams, TrainParams

PROJECT_PACKAGES = ("data_processing", "models", "deployment")
ENTRY = "models/common/serving.py"
EXPLAIN = "models/common/explain.py"  # heat maps for the server's POST /explain
MAIN = (
    '"""Run the bundle\'s predictor: python -B -E -s code --bundle DIR --images J --out J."""\n'
    "from models.common.serving import main\n\nmain()\n"
)


def _module_file(module: str, root: Path) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def project_imports(path: Path, root: Path = Path(".")) -> set[Path]:
    """Return `path` and every project module it imports, transitively, with package inits."""
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        parts = current.relative_to(root).parent.parts
        todo += [
            f
            for i in range(1, len(parts) + 1)
            if (f := root.joinpath(*parts[:i], "__init__.py")).is_file()
        ]
        for node in ast.walk(ast.parse(current.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.split(".")[0] in PROJECT_PACKAGES and (f := _module_file(name, root)):
                    todo.append(f)
    return seen


def copy_code(cell: Cell, code_dir: Path) -> list[str]:
    """Copy the model file, its project imports, the serving entry point and the
    explanations (common/explain.py) into code_dir."""
    files = project_imports(Path(f"models/architectures/{cell.model}.py"))
    files |= project_imports(Path(ENTRY)) | project_imports(Path(EXPLAIN))
    for f in sorted(files):
        (code_dir / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, code_dir / f)
    write_text(code_dir / "__main__.py", MAIN)
    return sorted(f.as_posix() for f in files)


def resolved_params(cell: Cell, spec: dict) -> dict:
    """Every params section the cell used, with defaults filled in, plus the model spec."""
    import models

    sections = {
        "base": BaseParams,
        "train": TrainParams,
        f"hparams.{cell.hparams}": HParams,
        f"models.{cell.model}": models.get(cell.model).Params,
    }
    resolved = {k: load_params(k, cls).model_dump(mode="json") for k, cls in sections.items()}
    return {
        "dataset": cell.dataset,
        "model": cell.model,
        "hparams": cell.hparams,
        **resolved,
        "spec": spec,
    }


def write_input_stats(cell: Cell, out_dir: Path, seed: int) -> None:
    """bundle/input_stats.json (none when params export.input_stats_images is 0)."""
    params = parse_params(read_params().get("export"), ExportParams, "export")
    if params.input_stats_images > 0:
        predictions = cell.eval_dir / "predictions.jsonl"
        shards, n = Shards.open(cell.shards), params.input_stats_images
        stats = input_stats(shards, RAW / cell.dataset, predictions, n, seed)
        write_json(out_dir / "input_stats.json", stats)


def export(cell: Cell, out_dir: Path, seed: int) -> None:
    """Write the bundle for `cell` into out_dir."""
    import_tensorflow()
    import keras

    def step(what: str) -> None:  # export takes a while: say where it is
        progress.say(f"export: {cell.name}: {what}")

    summary = json.loads((cell.train_dir / "train.json").read_text())
    model = keras.saving.load_model(cell.train_dir / "model.keras")
    shutil.copy2(cell.train_dir / "model.keras", out_dir / "model.keras")
    step("ONNX, checked against Keras on test images")
    onnx = export_onnx(model, out_dir / "model.onnx", load_check_images(cell.shards))
    step("Triton model repository and KServe manifests")
    standard_servers.write(out_dir, cell.name, summary["categories"], cell.bundle_dir)
    step("code, lineage and model card")
    write_json(out_dir / "labels.json", summary["categories"])
    write_json(out_dir / "params.json", resolved_params(cell, summary["spec"]))
    shutil.copy2(cell.details, out_dir / "metrics.json")
    files = copy_code(cell, out_dir / "code")
    data = lineage.data_hashes(cell.dataset)
    per_class = json.loads(cell.plot("per_class", "json").read_text())
    shutil.copy2(cell.eval_dir / "reference.json", out_dir / "reference.json")  # drift
    shutil.copy2(cell.eval_dir / "calibration.json", out_dir / "calibration.json")
    write_input_stats(cell, out_dir, seed)  # the server's out-of-distribution score
    record = {
        "cell": cell.name,
        "dataset": cell.dataset,
        "dataset_version": data.get(f"datasets/raw/{cell.dataset}"),
        "model": cell.model,
        "hparams": cell.hparams,
        "seed": seed,
        "code_sha256": lineage.tree_sha256(out_dir / "code"),
        "data": data,
        "images": {
            "train": summary["train_images"],
            "val": summary["val_images"],
            "test": sum(row["support"] for row in per_class),
        },
        "packages": lineage.package_versions(),
        "python": sys.version.split()[0],
        "code": files,
        "onnx": onnx,
    }
    write_json(out_dir / "lineage.json", record)
    card = model_card(
        record,
        json.loads((out_dir / "params.json").read_text()),
        json.loads(cell.details.read_text()),
        per_class,
        summary["categories"],
    )
    write_text(out_dir / "MODEL_CARD.md", card)


@exit_on_error
def main() -> None:
    cell = Cell(*cli.parse(__doc__, *cli.CELL))
    seed = load_params("base", BaseParams).seed
    with staged_dir(cell.bundle_dir) as out_dir:
        export(cell, out_dir, seed)
    print(f"export: {cell.name} -> {cell.bundle_dir}")


if __name__ == "__main__":
    main()
