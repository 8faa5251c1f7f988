"""params.yaml is read strictly: unknown keys and wrong types name the file and field."""

from pathlib import Path

import pytest

from data_processing.core.errors import DataError
from data_processing.core.params import Params, load_params, read_params
from models.common.spec import HParams, TrainParams


class Section(Params):
    epochs: int = 1
    rate: float = 0.1


def test_loads_typed_values(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("s:\n  epochs: 3\n  rate: 1\n")
    params = load_params("s", Section, path)
    assert (params.epochs, params.rate) == (3, 1.0)


def test_wrong_type_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("s:\n  epochs: ten\n")
    with pytest.raises(DataError) as err:
        load_params("s", Section, path)
    text = str(err.value)
    assert "params.yaml" in text and "'s.epochs'" in text and "'ten'" in text
    assert "integer" in text


def test_unknown_key_lists_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("s:\n  epoch: 3\n")
    with pytest.raises(DataError, match=r"'s\.epoch'.*known keys of 's': epochs, rate"):
        load_params("s", Section, path)


def test_missing_section(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("other: {}\n")
    with pytest.raises(DataError, match="expected a section 's'"):
        load_params("s", Section, path)


def test_project_params_are_valid() -> None:
    root = Path(__file__).resolve().parents[1]
    params = load_params("train", TrainParams, root / "params.yaml")
    assert len(params.image_size) == 2
    for name in read_params(root / "params.yaml")["hparams"]:
        assert load_params(f"hparams.{name}", HParams, root / "params.yaml").epochs > 0
