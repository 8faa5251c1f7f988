"""`reprovision keep` names the cell an experiment changed: a sweep that retrains one cell
leaves every other cell's metrics as its baseline had them, and the commit message is
about the one it changed, not whichever cell happens to score best overall."""

from models.keep import choose, message


def headline(f1: float) -> dict:
    return {"accuracy": f1, "f1_macro": f1, "ece": 0.01, "size_mb": 0.1}


def record(**cells: float) -> dict:
    files = {f"models/metrics/{c}.json": {"data": headline(f)} for c, f in cells.items()}
    return {"metrics": files}


def show(baseline: dict, **exps: dict) -> list[dict]:
    entries = [{"name": n, "revs": [{"name": n, "data": d}]} for n, d in exps.items()]
    return [{"rev": "HEAD", "data": baseline, "experiments": entries}]


BASE = record(digits_vgg_base=0.99, digits_cnn_base=0.97)


def test_the_message_names_the_cell_the_experiment_changed() -> None:
    tuned = record(digits_vgg_base=0.99, digits_cnn_base=0.98)  # only the cnn retrained
    name, cell, test, changed = choose(show(BASE, tuned=tuned), None)
    assert (name, cell, changed) == ("tuned", "digits_cnn_base", ["digits_cnn_base"])
    assert message(name, cell, test, changed) == (
        "Keep experiment tuned: digits_cnn_base "
        "f1_macro=0.9800, accuracy=0.9800, ece=0.0100, size_mb=0.1000"
    )


def test_the_best_experiment_is_judged_by_what_it_changed() -> None:
    a = record(digits_vgg_base=0.99, digits_cnn_base=0.98)
    b = record(digits_vgg_base=0.995, digits_cnn_base=0.97)
    name, cell, _, _ = choose(show(BASE, a=a, b=b), None)
    assert (name, cell) == ("b", "digits_vgg_base")


def test_other_changed_cells_are_listed() -> None:
    both = record(digits_vgg_base=0.991, digits_cnn_base=0.98)
    name, cell, test, changed = choose(show(BASE, both=both), "both")
    assert message(name, cell, test, changed).endswith("(also changed: digits_cnn_base)")


def test_without_baseline_metrics_every_cell_counts() -> None:
    exp = record(digits_vgg_base=0.99, digits_cnn_base=0.97)
    assert choose(show({}, exp=exp), "exp")[1] == "digits_vgg_base"
