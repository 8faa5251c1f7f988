"""Progress off a terminal: a few plain lines, never carriage-return fragments."""

from data_processing.core import progress


def test_quick_work_prints_nothing_off_a_terminal(capsys) -> None:
    with progress.bar(100, "shard") as bar:
        for _ in range(100):
            bar.update()
    progress.say("export: writing model.onnx")
    assert capsys.readouterr().err == ""


def test_long_work_prints_plain_lines(capsys, monkeypatch) -> None:
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)  # every update is "long enough"
    with progress.bar(4, "evaluate", unit="img") as bar:
        bar.set_postfix_str("batch 256")
        for _ in range(4):
            bar.update()
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines()[-1] == "evaluate: 4 of 4 img, 100% (batch 256)"
