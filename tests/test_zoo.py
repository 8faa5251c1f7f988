"""Every architecture trains on a few hundred real-looking photos (issue 11, bench/zoo.py).

Each model's `base` cell, trained by the train stage's own function with params.yaml's
defaults, reaches at least 0.9x the best cell's test accuracy on generated grayscale
two-class photos and on RGB three-class textures, and none collapses onto one class.
"""

import pytest

import models
from bench import zoo

pytestmark = pytest.mark.zoo


def test_every_model_trains_on_small_photo_datasets(tmp_path) -> None:
    targets = [name for name, spec in zoo.DATASETS.items() if spec[3]]
    cells = zoo.run(tmp_path, targets, models.available(), ["base"])
    assert len(cells) == len(targets) * len(models.available())
    assert zoo.failures(cells) == []
    for c in cells:
        assert c["above_chance"] and not c["collapsed"], c
    for name in targets:  # the best cell is a real one, not a best of failures
        assert max(c["accuracy"] for c in cells if c["dataset"] == name) >= 0.95
