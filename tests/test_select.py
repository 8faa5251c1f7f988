"""The promotion gate: best macro F1 among candidates that pass every threshold; a failed gate
keeps the previous pointer."""

import json
from pathlib import Path

import pytest
from conftest import edit_params, run_stage

from deployment.select import SelectParams, choose

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
        path = project / "models" / "metrics" / f"d-{name}-h.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics(f1)))
        bundle = project / "models" / "runs" / f"d-{name}-h" / "bundle"
        bundle.mkdir(parents=True)
        (bundle / "model.keras").write_bytes(name.encode())
    (project / "deployment").mkdir()
    return project


def select(project: Path):
    return run_stage(
        "deployment.select",
        "models/metrics",
        "models/runs",
        "deployment/production.json",
        cwd=project,
    )


def test_stage_writes_pointer(cells: Path) -> None:
    proc = select(cells)
    assert proc.returncode == 0, proc.stderr
    pointer = json.loads((cells / "deployment/production.json").read_text())
    assert pointer["name"] == "d-b-h" and pointer["bundle"] == "models/runs/d-b-h/bundle"
    assert (pointer["dataset"], pointer["model"], pointer["hparams"]) == ("d", "b", "h")
    assert pointer["sha256"] == "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d"
    gate = json.loads((cells / "deployment/gate.json").read_text())
    assert gate["selected"] == "d-b-h" and set(gate["candidates"]) == {"d-a-h", "d-b-h"}


def test_failed_gate_keeps_previous_pointer(cells: Path) -> None:
    assert select(cells).returncode == 0
    before = (cells / "deployment/production.json").read_bytes()
    edit_params(cells / "params.yaml", select={"min_f1": 0.99})
    proc = select(cells)
    assert proc.returncode == 0
    assert "no candidate passed the gate" in proc.stdout and "left unchanged" in proc.stdout
    assert "f1_macro 0.9700 < 0.99" in proc.stdout
    assert (cells / "deployment/production.json").read_bytes() == before


def test_failed_gate_without_pointer_fails(cells: Path) -> None:
    edit_params(cells / "params.yaml", select={"min_recall": 0.99})
    proc = select(cells)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "deployment/production.json: expected a candidate that passes the gate" in proc.stderr
    assert not (cells / "deployment/production.json").exists()
