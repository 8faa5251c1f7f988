"""The promotion gate: best macro F1 among candidates that pass every threshold; a failed gate
keeps the previous pointer."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import edit_params, run_stage

from deployment.release.select import SelectParams, choose

GATE = SelectParams(min_f1=0.9, min_precision=0.9, min_recall=0.9)


def metrics(f1: float, precision: float = 0.95, recall: float = 0.95) -> dict:
    return {
        "test": {
            "accuracy": f1,
            "f1_macro": f1,
            "precision_macro": precision,
            "recall_macro": recall,
        }
    }


def test_best_passing_candidate_wins() -> None:
    best, report = choose(
        {"d-a": metrics(0.93), "d-b": metrics(0.97, precision=0.85), "d-c": metrics(0.95)}, GATE
    )
    assert best == "d-c"  # d-b has the best F1 but fails on precision
    assert report["d-b"]["passed"] is False
    assert report["d-b"]["reasons"] == ["precision_macro 0.8500 < 0.9"]


def test_none_passing() -> None:
    best, report = choose({"d-a": metrics(0.5, recall=0.4)}, GATE)
    assert best is None and len(report["d-a"]["reasons"]) == 2


@pytest.fixture
def cells(project: Path) -> Path:
    edit_params(project / "params.yaml", datasets=["d"], models=None, hparams=None)
    edit_params(project / "params.yaml", models={"a": {}, "b": {}}, hparams={"h": {}})
    for name, f1 in (("a", 0.95), ("b", 0.97)):
        path = project / "models" / "runs" / f"d-{name}-h" / "eval" / "metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics(f1)))
        bundle = project / "models" / "runs" / f"d-{name}-h" / "bundle"
        bundle.mkdir(parents=True)
        (bundle / "model.keras").write_bytes(name.encode())
        (bundle.parent / "eval" / "samples.json").write_text(json.dumps({"cell": name}))
    (project / "deployment").mkdir()
    return project


def select(project: Path):
    return run_stage("deployment.release.select", "d", cwd=project)


def test_stage_writes_pointer(cells: Path) -> None:
    proc = select(cells)
    assert proc.returncode == 0, proc.stderr
    pointer = json.loads((cells / "deployment/d/production.json").read_text())
    assert pointer["name"] == "d-b-h" and pointer["bundle"] == "deployment/d/production"
    assert pointer["version"] == pointer["sha256"][:12] and pointer["history"] == []
    production = cells / "deployment/d/production"
    assert (production / "model.keras").read_bytes() == b"b"
    assert json.loads((production / "eval/samples.json").read_text()) == {"cell": "b"}
    assert (pointer["dataset"], pointer["model"], pointer["hparams"]) == ("d", "b", "h")
    assert pointer["sha256"] == "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d"
    gate = json.loads((cells / "deployment/d/gate.json").read_text())
    assert gate["selected"] == "d-b-h" and set(gate["candidates"]) == {"d-a-h", "d-b-h"}


def test_failed_gate_keeps_previous_pointer(cells: Path) -> None:
    assert select(cells).returncode == 0
    before = (cells / "deployment/d/production.json").read_bytes()
    edit_params(cells / "params.yaml", select={"min_f1": 0.99})
    proc = select(cells)
    assert proc.returncode == 0
    assert "no candidate passed the gate" in proc.stdout and "left unchanged" in proc.stdout
    assert "f1_macro 0.9700 < 0.99" in proc.stdout
    assert (cells / "deployment/d/production.json").read_bytes() == before


def test_failed_gate_without_pointer_fails(cells: Path) -> None:
    edit_params(cells / "params.yaml", select={"min_recall": 0.99})
    proc = select(cells)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert (
        "deployment/d/production.json: expected a candidate of d that passes the gate"
        in proc.stderr
    )
    assert not (cells / "deployment/d/production.json").exists()


def set_f1(project: Path, cell: str, f1: float, model: bytes) -> None:
    (project / "models/runs" / cell / "eval/metrics.json").write_text(json.dumps(metrics(f1)))
    (project / "models/runs" / cell / "bundle/model.keras").write_bytes(model)


def pointer_of(project: Path) -> dict:
    return json.loads((project / "deployment/d/production.json").read_text())


def test_candidate_must_beat_production_by_the_margin(cells: Path) -> None:
    assert select(cells).returncode == 0  # d-b-h, F1 0.97
    edit_params(cells / "params.yaml", select={"margin": 0.02})
    set_f1(cells, "d-a-h", 0.985, b"a2")  # better, but by less than the margin
    proc = select(cells)
    assert proc.returncode == 0, proc.stderr
    assert "does not beat production d-b-h F1 + margin 0.9900" in proc.stdout
    assert pointer_of(cells)["name"] == "d-b-h"
    set_f1(cells, "d-a-h", 0.995, b"a3")
    assert select(cells).returncode == 0
    pointer = pointer_of(cells)
    assert pointer["name"] == "d-a-h" and pointer["history"][0]["name"] == "d-b-h"
    assert (cells / "deployment/d/previous/model.keras").read_bytes() == b"b"
    gate = json.loads((cells / "deployment/d/gate.json").read_text())
    assert gate["promoted"] is True and "> production d-b-h" in gate["reason"]


def test_same_model_is_not_promoted_again(cells: Path) -> None:
    assert select(cells).returncode == 0
    before = (cells / "deployment/d/production.json").read_bytes()
    proc = select(cells)
    assert "is already in production" in proc.stdout and "refreshed" not in proc.stdout
    assert (cells / "deployment/d/production.json").read_bytes() == before
    # the same model re-exported with a new file: production's copy gets it, nothing else moves
    (cells / "models/runs/d-b-h/bundle/input_stats.json").write_text("{}")
    proc = select(cells)
    assert "production's bundle files refreshed" in proc.stdout, proc.stdout
    assert (cells / "deployment/d/production/input_stats.json").read_text() == "{}"
    assert (cells / "deployment/d/production/eval/samples.json").is_file()
    assert (cells / "deployment/d/production.json").read_bytes() == before
    assert not (cells / "deployment/d/previous").exists()


def test_rollback_is_one_command_and_sticks(cells: Path) -> None:
    assert select(cells).returncode == 0  # d-b-h
    set_f1(cells, "d-a-h", 0.99, b"a2")
    assert select(cells).returncode == 0  # d-a-h replaces it
    proc = run_stage("deployment.release.rollback", "d", cwd=cells)
    assert proc.returncode == 0, proc.stderr
    assert "d-a-h" in proc.stdout and "-> d-b-h" in proc.stdout
    assert "not in the registry; only the local pointer moved" in proc.stdout
    pointer = pointer_of(cells)
    assert pointer["name"] == "d-b-h" and pointer["history"][0]["name"] == "d-a-h"
    assert (cells / "deployment/d/production/model.keras").read_bytes() == b"b"
    assert pointer["rejected"] == [pointer["history"][0]["sha256"]]
    proc = select(cells)  # the rolled-back model is still the best: not promoted again
    assert "d-a-h: version" in proc.stdout and "was rolled back; skipped" in proc.stdout
    assert pointer_of(cells)["name"] == "d-b-h"


def test_rollback_without_history_fails_clearly(cells: Path) -> None:
    assert select(cells).returncode == 0
    proc = run_stage("deployment.release.rollback", "d", cwd=cells)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "no earlier production to roll back to" in proc.stderr


def test_pointer_without_its_production_folder_chooses_afresh(cells: Path) -> None:
    assert select(cells).returncode == 0
    shutil.rmtree(cells / "deployment/d/production")  # an older pointer format, or a lost folder
    (cells / "models/runs/d-b-h/bundle/model.keras").write_bytes(b"b retrained")
    proc = select(cells)
    assert proc.returncode == 0, proc.stderr
    assert "does not hold deployment/d/production.json's model; choosing afresh" in proc.stdout
    assert (cells / "deployment/d/production/model.keras").read_bytes() == b"b retrained"


def test_a_fresh_clone_restores_production_from_its_run_and_keeps_the_pointer(
    cells: Path,
) -> None:
    """A clone has the pointer (git) but not its folder (DVC cache); the cell's run holds the
    same model.keras, so the folder is restored and the pointer's bytes stay as committed."""
    assert select(cells).returncode == 0
    before = (cells / "deployment/d/production.json").read_bytes()
    shutil.rmtree(cells / "deployment/d/production")
    proc = select(cells)
    assert proc.returncode == 0, proc.stderr
    assert "deployment/d/production restored from models/runs/d-b-h/bundle" in proc.stdout
    assert (cells / "deployment/d/production.json").read_bytes() == before
    assert (cells / "deployment/d/production/model.keras").read_bytes() == b"b"
    assert (cells / "deployment/d/production/eval/samples.json").is_file()


def test_datasets_have_a_production_model_each(cells: Path) -> None:
    """Two datasets, two gates: each promotes its own best, a rollback of one leaves the
    other, and a dataset whose cells all fail the gate fails alone with a clear error."""
    edit_params(cells / "params.yaml", datasets=["d", "e"])
    for name, f1 in (("a", 0.91), ("b", 0.5)):
        run = cells / "models/runs" / f"e-{name}-h"
        (run / "eval").mkdir(parents=True)
        (run / "eval/metrics.json").write_text(json.dumps(metrics(f1)))
        (run / "eval/samples.json").write_text(json.dumps({"cell": f"e-{name}"}))
        (run / "bundle").mkdir()
        (run / "bundle/model.keras").write_bytes(f"e-{name}".encode())
    assert select(cells).returncode == 0
    assert run_stage("deployment.release.select", "e", cwd=cells).returncode == 0
    d, e = pointer_of(cells), json.loads((cells / "deployment/e/production.json").read_text())
    assert (d["name"], e["name"]) == ("d-b-h", "e-a-h")  # each among its own cells only
    assert (cells / "deployment/e/production/model.keras").read_bytes() == b"e-a"
    best = json.loads((cells / "deployment/e/best.json").read_text())["e"]
    assert (best["best"], best["f1_macro"], best["production"]) == (
        "a-h",
        0.91,
        f"a-h@{e['version'][:8]}",  # short: a column of dvc exp show's 200
    )
    set_f1(cells, "d-a-h", 0.99, b"a2")
    assert select(cells).returncode == 0  # d moves on: d-a-h
    before = (cells / "deployment/e/production.json").read_bytes()
    assert run_stage("deployment.release.rollback", "d", cwd=cells).returncode == 0
    assert pointer_of(cells)["name"] == "d-b-h"
    assert (cells / "deployment/e/production.json").read_bytes() == before  # e untouched
    proc = run_stage("deployment.release.rollback", "e", cwd=cells)
    assert proc.returncode == 1 and "no earlier production to roll back to" in proc.stderr
    proc = run_stage("deployment.release.rollback", "f", cwd=cells)
    assert proc.returncode == 1 and "f has no production model (in production: d, e)" in (
        proc.stderr
    )
    shutil.rmtree(cells / "deployment/e")
    edit_params(cells / "params.yaml", select={"min_f1": 0.95})
    proc = run_stage("deployment.release.select", "e", cwd=cells)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "deployment/e/production.json: expected a candidate of e that passes" in proc.stderr
    assert select(cells).returncode == 0  # d still promotes
