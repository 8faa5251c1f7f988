"""Merge served feedback into a dataset's train split, for continuous training.

The prediction server stores every labelled feedback record as a seed-format dataset under
datasets/raw/feedback/ (deployment/server/feedback_store.py). params.yaml `feedback.dataset`
names the
dataset it belongs to; normalizing that dataset appends every feedback image (both of the
feedback folder's splits) to its train split, so the test split, and therefore the
comparison with the production model, stays fixed. File names stay relative to the dataset
root ("../feedback/train/<id>.png"), so validate and shard read the images where they are.
Nothing is merged until params `feedback.snapshot` names a `dvc add`ed snapshot of the folder
(deployment.release.watch sets it with `dvc exp run -S`): that param is how DVC knows to re-run
normalize, whose only data dependency is datasets/raw/<dataset>.

Feedback with fewer than two records (one split only) is not merged yet; a feedback label
that is not one of the dataset's classes is an error that names the feedback CSV row.
"""

from dataclasses import replace
from pathlib import Path

from data_processing import schema, sources
from data_processing.core.errors import DataError
from data_processing.core.params import Params

FOLDER = "feedback"  # datasets/raw/feedback


class FeedbackParams(Params):
    dataset: str = ""  # the dataset feedback is merged into; "" merges nothing
    min_records: int = 20  # deployment.release.watch retrains after this many new records
    snapshot: str = ""  # md5 of the feedback snapshot to merge; the watch sets it (dvc exp -S)


def merge(train: schema.Dataset, raw_dir: Path, params: FeedbackParams) -> schema.Dataset:
    """Return train with the feedback images appended (unchanged when there is none)."""
    folder = Path(raw_dir).parent / FOLDER
    if not params.snapshot or params.dataset != Path(raw_dir).name or folder == Path(raw_dir):
        return train  # merged only once the watch names a snapshot: a versioned input
    if not all((folder / s / "groundtruth.csv").is_file() for s in ("train", "test")):
        return train  # no feedback yet, or a single record
    ids = {c.name: c.id for c in train.categories}
    added = []
    for split in sources.get("seed").parse(folder, FOLDER).values():
        names = {c.id: c.name for c in split.categories}
        for image in split.images:
            labels = tuple(names[i] for i in image.labels or ())
            unknown = [n for n in labels if n not in ids]
            if unknown:
                raise DataError(
                    image.source or folder,
                    f"a class of dataset {params.dataset}: {sorted(ids)}",
                    found=repr(unknown[0]),
                )
            file_name = f"../{FOLDER}/{image.file_name}"
            added.append(replace(image, file_name=file_name, labels=tuple(ids[n] for n in labels)))
    ours = tuple(train.images)  # Image objects made once (an ImageTable makes new ones)
    images = sorted((*ours, *added), key=lambda i: i.file_name)
    new_id = {id(image): n for n, image in enumerate(images, 1)}
    old_to_new = {image.id: new_id[id(image)] for image in ours}
    annotations = tuple(replace(a, image_id=old_to_new[a.image_id]) for a in train.annotations)
    info = {**train.info, "feedback_images": len(added)}
    return replace(
        train,
        images=tuple(replace(image, id=new_id[id(image)]) for image in images),
        annotations=annotations,
        info=info,
    )
