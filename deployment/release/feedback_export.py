"""The served feedback as a seed-format dataset, for continuous training (the watch).

Under the feedback root, from the server's database (deployment/server/feedback_store.py):

    <split>/<request_id>.<ext>      the image (a hard link into images/ where possible)
    <split>/groundtruth.csv         filename,label: every accepted record of the split, sorted

Only records accepted in review (by a reviewer or by agreement, deployment/server/
review_store.py) are exported or counted: pending and rejected ones never train. Given the
trained dataset's labels, only feedback on a model of those labels counts: a server that
serves several datasets' models keeps all their feedback in one store.
.dvcignore keeps the database and images/ out of the `dvc add`ed snapshot.
"""

import csv
import io
import json
import os
import shutil
from pathlib import Path

from data_processing.core.io import write_text
from data_processing.sources.seed import CSV_NAME  # the seed format the export writes
from deployment.server.feedback_store import DATABASE, SPLITS, connect


def _accepted(root: Path, labels: list[str] | None) -> list[tuple[str, str, str]]:
    """(file, image, true_label) of every accepted record, by file; of a model with `labels`
    when given."""
    db = connect(root)
    try:
        rows = db.execute(
            "SELECT file, image, true_label, labels FROM feedback WHERE review = 'accepted' "
            "ORDER BY file"
        ).fetchall()
    finally:
        db.close()
    return [row[:3] for row in rows if labels is None or json.loads(row[3]) == labels]


def count(root: Path, labels: list[str] | None = None) -> int:
    """How many accepted records (of a model with `labels`) the database under root holds."""
    if not (Path(root) / DATABASE).is_file():
        return 0
    return len(_accepted(Path(root), labels))


def export(root: Path, labels: list[str] | None = None) -> int:
    """Write the seed-format dataset from the database: <split>/<request_id>.<ext> and
    <split>/groundtruth.csv for every accepted record; files no accepted record names
    (deleted, rejected or relabelled ones, a CSV of a split left empty) are removed. Returns
    the number of records exported. Given `labels`, only feedback on a model of them."""
    root = Path(root)
    if not (root / DATABASE).is_file():
        return 0
    rows = _accepted(root, labels)
    for split in SPLITS:
        chosen = [row for row in rows if row[0].startswith(f"{split}/")]
        keep = {Path(file).name for file, _, _ in chosen} | ({CSV_NAME} if chosen else set())
        folder = root / split
        if chosen:
            folder.mkdir(exist_ok=True)
        for path in folder.iterdir() if folder.is_dir() else ():
            if path.name not in keep and path.is_file():
                path.unlink()
        for file, image, _ in chosen:
            _place(root / image, root / file)
        if chosen:
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(("filename", "label"))
            writer.writerows((Path(file).name, label) for file, _, label in chosen)
            write_text(folder / CSV_NAME, text.getvalue())
    return len(rows)


def _place(source: Path, target: Path) -> None:
    """target as a hard link to source (a copy where links fail); left as it is when it
    already is that file."""
    if target.is_file() and os.path.samefile(source, target):
        return
    tmp = target.with_name(f".tmp-{target.name}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
