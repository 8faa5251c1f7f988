"""Pretrained backbones: save one from a model we trained, load it into a fresh model.

A transferable architecture (models/architectures/mobilenet.py) builds its feature extractor
as a sub-model named `backbone`, so its weights load into a model with any class count.
Weights files live under datasets/pretrained/ (see the README there); nothing is downloaded.

Reads a trained model (a run dir or a .keras file); writes <name>.weights.h5.

Run: python -m models.common.transfer models/runs/digits-mobilenet/train \
         datasets/pretrained/digits-mobilenet.weights.h5
"""

import sys
import warnings
from pathlib import Path

import keras

from data_processing.core.errors import DataError, exit_on_error

BACKBONE = "backbone"  # the name of the feature-extractor sub-model
HOW_TO = (
    "to produce it, train a transferable model (e.g. `dvc repro train@digits-mobilenet`) and "
    "run `python -m models.common.transfer models/runs/digits-mobilenet/train {path}`; "
    "see datasets/pretrained/README.md"
)


class MissingWeights(DataError, FileNotFoundError):
    """No weights file where params point (a stage prints it as one line, exit status 2)."""


class MismatchedWeights(DataError, ValueError):
    """A weights file whose layers or shapes do not fit the backbone being built."""


def save_backbone(model: keras.Model, path: Path | str) -> Path:
    """Write the weights of `model`'s backbone sub-model to `path` (must end in .weights.h5).

    Args:
        model: a built model whose feature extractor is a sub-model named `backbone`.
        path: the weights file to write; parent folders are created.

    Returns:
        The path written.
    """
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ValueError(f"{path}: a backbone weights file must end in .weights.h5")
    path.parent.mkdir(parents=True, exist_ok=True)
    _backbone(model).save_weights(path)
    return path


def load_backbone(backbone: keras.Model, path: Path | str) -> None:
    """Load a save_backbone() file into `backbone`, with errors that say what to do.

    Raises:
        MissingWeights: a FileNotFoundError naming `path` and saying how to produce it.
        MismatchedWeights: a ValueError; the file's layers or shapes differ from `backbone`.
    """
    path = Path(path)
    if not path.is_file():
        expected = "a pretrained backbone weights file (.weights.h5)"
        raise MissingWeights(path, expected, found="none", hint=HOW_TO.format(path=path))
    expected = "weights saved from a backbone built with the same architecture params and "
    expected += "image channels as this one"
    saved = _count_arrays(path)  # Keras silently ignores saved layers the backbone lacks
    if saved != len(backbone.weights):
        found = f"{saved} weight arrays in the file, {len(backbone.weights)} in this backbone"
        raise MismatchedWeights(path, expected, found=found)
    try:
        with warnings.catch_warnings():  # Keras only warns when it skips unmatched layers
            warnings.simplefilter("error", UserWarning)
            backbone.load_weights(path)
    except (ValueError, KeyError, UserWarning) as err:
        raise MismatchedWeights(path, expected, found=str(err).splitlines()[0][:300]) from None


def _count_arrays(path: Path) -> int:
    import h5py

    arrays: list[str] = []
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: arrays.append(name) if isinstance(obj, h5py.Dataset) else None
        )
    return len(arrays)


def _backbone(model: keras.Model) -> keras.Model:
    try:
        return model.get_layer(BACKBONE)
    except ValueError:
        raise ValueError(
            f"model {model.name!r} has no sub-model named {BACKBONE!r}; only transferable "
            "architectures (e.g. mobilenet) can export a backbone"
        ) from None


@exit_on_error
def main() -> None:
    """CLI: python -m models.common.transfer RUN_DIR_OR_MODEL_KERAS OUT_FILE."""
    source, out = map(Path, sys.argv[1:3])
    model_file = source / "model.keras" if source.is_dir() else source
    model = keras.saving.load_model(model_file)
    print(f"transfer: backbone of {model_file} -> {save_backbone(model, out)}")


if __name__ == "__main__":
    main()
