"""Render a validation report for people: pictures (PIL), Markdown and HTML.

Reads sampled images under the dataset root to draw pictures; `write_report` writes
validate.json, validate.md, validate.html and the PNGs into one folder, all or nothing.
Pictures are small and deterministic (evenly spaced samples in file order, no randomness), so
the report folder is reproducible and DVC's cache holds.
"""

import html
from pathlib import Path

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from data_processing import schema
from data_processing.core.io import staged_dir, write_json, write_text
from data_processing.images import decode

Pictures = dict[str, tuple[str, PILImage.Image]]  # PNG file name -> (caption, picture)
TILE = 64  # px: side of one thumbnail in the sample grid (8x8 digits are scaled up, crisp)
BOX_TILE = 192  # px: side of one image with its boxes drawn
LABEL_WIDTH = 140  # px: class-name column of the sample grid
PAD = 4  # px between tiles
AUDIT_TILE = 96  # px: side of one suspect in label_audit.png
AUDIT_COLUMNS = 8  # suspects per row of label_audit.png
COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6")


def _spaced(items: list, n: int) -> list:
    """Up to n items, evenly spaced over the list (deterministic sampling)."""
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def _thumbnail(path: Path, side: int) -> tuple[PILImage.Image, float]:
    """The image scaled to fit side x side (nearest when enlarging), and the scale used."""
    im = PILImage.fromarray(decode(path, channels=3))
    scale = side / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    resample = PILImage.Resampling.NEAREST if scale >= 1 else PILImage.Resampling.LANCZOS
    return im.resize(size, resample), scale


def draw_samples(
    raw_dir: Path, dataset: schema.Dataset, per_class: int, max_classes: int
) -> PILImage.Image | None:
    """A grid: one row per class (the first `max_classes`), `per_class` images per row."""
    names = {c.id: c.name for c in dataset.categories}
    by_class: dict[str, list[schema.Image]] = {name: [] for name in names.values()}
    for image in dataset.images:
        for c in image.labels or ():
            by_class.setdefault(names.get(c, str(c)), []).append(image)
    rows = [(name, images) for name, images in by_class.items() if images][:max_classes]
    if not rows or per_class <= 0:
        return None
    step = TILE + PAD
    canvas = PILImage.new("RGB", (LABEL_WIDTH + per_class * step, len(rows) * step), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for r, (name, images) in enumerate(rows):
        draw.text((PAD, r * step + TILE // 2 - 6), f"{name} ({len(images)})", "black", font)
        for c, image in enumerate(_spaced(images, per_class)):
            thumb, _ = _thumbnail(Path(raw_dir) / image.file_name, TILE)
            canvas.paste(thumb, (LABEL_WIDTH + c * step, r * step))
    return canvas


def draw_boxes(raw_dir: Path, splits: dict[str, schema.Dataset], n: int) -> PILImage.Image | None:
    """Up to n images that have boxes, each with its boxes and class names drawn on it."""
    chosen = []
    for dataset in splits.values():
        boxes: dict[int, list[schema.Annotation]] = {}
        for ann in dataset.annotations:
            boxes.setdefault(ann.image_id, []).append(ann)
        names = {c.id: c.name for c in dataset.categories}
        chosen += [(i, boxes[i.id], names) for i in dataset.images if i.id in boxes]
    chosen = _spaced(chosen, n)
    if not chosen:
        return None
    step = BOX_TILE + PAD
    canvas = PILImage.new("RGB", (len(chosen) * step, step + 14), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for k, (image, anns, names) in enumerate(chosen):
        thumb, scale = _thumbnail(Path(raw_dir) / image.file_name, BOX_TILE)
        canvas.paste(thumb, (k * step, 0))
        for ann in anns:
            x, y, w, h = (v * scale for v in ann.bbox)
            colour = COLOURS[ann.category_id % len(COLOURS)]
            box = (k * step + x, y, k * step + x + max(w, 1), y + max(h, 1))
            draw.rectangle(box, outline="black", width=4)  # a dark rim: visible on any image
            draw.rectangle(box, outline=colour, width=2)
            label = names.get(ann.category_id, "?")
            draw.rectangle(draw.textbbox((box[0] + 2, box[1] + 2), label, font), fill="black")
            draw.text((box[0] + 2, box[1] + 2), label, colour, font)
        draw.text((k * step, step), image.file_name[-32:], "black", font)
    return canvas


def draw_pairs(raw_dir: Path, pairs: list[dict], n: int) -> PILImage.Image | None:
    """The first n near-duplicate examples of validate.json (closest first), side by side.

    Each example is one pair of images; `pairs` > 1 says how many image pairs share its two
    pHashes. Only n pairs are decoded, however many the dataset holds.
    """
    pairs = pairs[:n]
    if not pairs:
        return None
    step = TILE + PAD
    canvas = PILImage.new("RGB", (2 * step + LABEL_WIDTH * 2, len(pairs) * step), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for r, pair in enumerate(pairs):
        for c, file in enumerate(pair["files"]):
            canvas.paste(_thumbnail(Path(raw_dir) / file, TILE)[0], (c * step, r * step))
        text = "\n".join([*pair["files"], f"distance {pair['distance']}"])
        if pair.get("pairs", 1) > 1:
            text += f" ({pair['pairs']} such pairs)"
        draw.text((2 * step + PAD, r * step + 4), text, "black", font)
    return canvas


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """text, cut with ".." to fit `width` pixels."""
    while len(text) > 2 and draw.textlength(text, font=font) > width:
        text = text[:-3] + ".."
    return text


def draw_label_issues(raw_dir: Path, audit: dict) -> PILImage.Image:
    """The label audit's listed suspects in rank order, each captioned with its rank, quality
    and "given -> suggested", under a line that counts them and gives the audit's notes."""
    issues, cols = audit.get("listed", []), AUDIT_COLUMNS
    head = f"{audit.get('count', 0)} of {audit.get('audited', 0)} train images may be mislabelled"
    head += f"; first {len(issues)} by rank: given -> suggested" if issues else ""
    notes = [head] * (not audit.get("inconclusive")) + _audit_notes(audit)
    step_x, step_y, top = AUDIT_TILE + 3 * PAD, AUDIT_TILE + 30, 8 + 12 * len(notes)
    canvas = PILImage.new("RGB", (cols * step_x, top + -(-len(issues) // cols) * step_y), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for line, text in enumerate(notes):
        draw.text(
            (PAD, 4 + 12 * line), _fit(draw, text, font, canvas.width - 2 * PAD), "black", font
        )
    for k, issue in enumerate(issues):
        x, y = (k % cols) * step_x + PAD, top + (k // cols) * step_y
        canvas.paste(_thumbnail(Path(raw_dir) / issue["file"], AUDIT_TILE)[0], (x, y))
        rank = f"{issue['rank']}. quality {issue['quality']:.2g}"
        change = f"{issue['given']} -> {issue['suggested']}"
        for line, text in enumerate((rank, change)):
            text = _fit(draw, text, font, step_x - PAD)
            draw.text((x, y + AUDIT_TILE + 2 + 12 * line), text, "black", font)
    return canvas


def draw_pictures(
    raw_dir: Path, splits: dict[str, schema.Dataset], report: dict, per_class: int, n_boxes: int
) -> Pictures:
    """Every picture the report shows, by PNG file name; absent when there is nothing to draw."""
    train = splits.get("train") or next(iter(splits.values()))
    audit = report.get("label_audit", {})
    drawn = {
        "samples.png": (
            "Sample training images per class",
            draw_samples(raw_dir, train, per_class, 30),
        ),
        "boxes.png": ("Images with their boxes", draw_boxes(raw_dir, splits, n_boxes)),
        "near_duplicates.png": (
            "Closest near-duplicate pairs across splits",
            draw_pairs(raw_dir, report["leakage"]["near"], per_class),
        ),
        "label_audit.png": (
            "Suspected label errors in train (label audit), ranked: given -> suggested",
            draw_label_issues(raw_dir, audit) if audit.get("listed") else None,
        ),
    }
    return {name: (caption, pic) for name, (caption, pic) in drawn.items() if pic is not None}


def _split_rows(stats: dict) -> list[tuple[str, str]]:
    """(statistic, value) rows describing one split's images."""
    spread = lambda s: f"{s.get('min')} / {s.get('median')} / {s.get('max')}"  # noqa: E731
    return [
        ("images", str(stats["images"])),
        ("boxes", str(stats["boxes"])),
        ("width min / median / max", spread(stats["width"])),
        ("height min / median / max", spread(stats["height"])),
        (f"sizes ({stats['distinct_sizes']} distinct, most common)", str(stats["sizes"])),
        ("modes", str(stats["modes"])),
    ]


def to_markdown(report: dict) -> str:
    """The report as Markdown, linking the PNGs in the same folder."""
    lines = [f"# Validation report: {report['dataset']}", ""]
    lines += ["## Errors", *([f"- {e}" for e in report["errors"]] or ["none"]), ""]
    lines += ["## Warnings", *([f"- {w}" for w in report["warnings"]] or ["none"]), ""]
    if report.get("pictures"):
        lines += ["## Pictures", ""]
        lines += [f"[![{c}]({f})]({f})  \n{c}\n" for f, c in report["pictures"].items()]
    lines += _audit_markdown(report["label_audit"]) if "label_audit" in report else []
    for split, stats in report["splits"].items():
        lines += [f"## {split}: {stats['images']} images", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in _split_rows(stats)]
        lines += ["", "| class | images |", "|---|---|"]
        lines += [f"| {n} | {k} |" for n, k in stats["class_counts"].items()] + [""]
    leak = report.get("leakage", {})
    lines += [f"{_leak_counts(leak)}", ""]
    lines += [f"Exact duplicates: {leak.get('exact_hash')}. Near: {leak.get('near_hash')}.", ""]
    return "\n".join(lines)


def _audit_notes(audit: dict) -> list[str]:
    """The label audit's notes, first why it is inconclusive (when it is)."""
    reason = audit.get("inconclusive")
    return ([f"Inconclusive: {reason}."] if reason else []) + audit.get("notes", [])


def _audit_summary(audit: dict) -> str:
    """One paragraph on the label audit: method, how many audited and found, and notes."""
    text = f"{audit['audited']} of {audit['train_images']} train images audited ({audit['folds']}"
    text += f" folds, out-of-fold accuracy {audit['accuracy']}, kappa {audit['kappa']}) by "
    text += audit["method"] + (
        "." if audit.get("inconclusive") else f": {audit['count']} suspects."
    )
    return " ".join([text, *_audit_notes(audit)])


AUDIT_FIELDS = ("rank", "file", "given", "suggested", "quality")  # of each listed suspect


def _audit_markdown(audit: dict) -> list[str]:
    lines = ["## Label audit", "", _audit_summary(audit), ""]
    rows = [[str(issue[k]) for k in AUDIT_FIELDS] for issue in audit.get("listed", [])]
    table = [AUDIT_FIELDS, ["---"] * len(AUDIT_FIELDS), *rows] if rows else []
    return lines + ["| " + " | ".join(row) + " |" for row in table] + [""] * bool(rows)


def _leak_counts(leakage: dict) -> str:
    """One sentence of validate.json `leakage.counts`: every duplicate counted, listed or not."""
    counts = leakage.get("counts", {})
    return (
        f"Duplicates: {counts.get('exact_groups', 0)} group(s) of identical images across "
        f"splits ({counts.get('exact_images', 0)} images), "
        f"{counts.get('within_split_groups', 0)} within a split "
        f"({counts.get('within_split_images', 0)} images), "
        f"{counts.get('near_pairs', 0)} near-duplicate image pair(s) across splits."
    )


def _html_list(items: list[str]) -> str:
    if not items:
        return "<p>none</p>"
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def _html_table(rows: list[tuple | list], head: tuple[str, ...]) -> str:
    def row(cells, tag: str) -> str:
        return "<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in cells) + "</tr>"

    return "<table>" + row(head, "th") + "".join(row(r, "td") for r in rows) + "</table>"


def to_html(report: dict) -> str:
    """The report as one HTML page showing the PNGs of the same folder (relative src)."""
    title = html.escape(f"Validation report: {report['dataset']}")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"]
    parts += ["<style>body{font-family:sans-serif;max-width:70em}td,th{padding:2px 8px;"]
    parts += ["border:1px solid #ccc}table{border-collapse:collapse}</style></head><body>"]
    parts += [f"<h1>{title}</h1>", "<h2>Errors</h2>", _html_list(report["errors"])]
    parts += ["<h2>Warnings</h2>", _html_list(report["warnings"])]
    for file, caption in report.get("pictures", {}).items():
        alt, src = html.escape(caption), html.escape(file)
        parts += [f"<figure><img src='{src}' alt='{alt}'><figcaption>{alt}</figcaption></figure>"]
    if audit := report.get("label_audit"):
        rows = [[issue[k] for k in AUDIT_FIELDS] for issue in audit.get("listed", [])]
        parts += ["<h2>Label audit</h2>", f"<p>{html.escape(_audit_summary(audit))}</p>"]
        parts += [_html_table(rows, AUDIT_FIELDS)] if rows else []
    for split, stats in report["splits"].items():
        parts += [f"<h2>{html.escape(split)}: {stats['images']} images</h2>"]
        parts += [_html_table(_split_rows(stats), ("statistic", "value"))]
        parts += [_html_table(list(stats["class_counts"].items()), ("class", "images"))]
    leak = report.get("leakage", {})
    parts += [f"<p>{html.escape(_leak_counts(leak))}</p>"]
    parts += [f"<p>Exact duplicates: {html.escape(str(leak.get('exact_hash')))}. "]
    parts += [f"Near: {html.escape(str(leak.get('near_hash')))}.</p></body></html>", ""]
    return "\n".join(parts)


def write_report(
    out_dir: Path, report: dict, pictures: Pictures, files: dict[str, object] | None = None
) -> None:
    """Write validate.{json,md,html}, the PNGs and `files` (name -> JSON data) into out_dir,
    replacing it whole."""
    report = {**report, "pictures": {name: caption for name, (caption, _) in pictures.items()}}
    with staged_dir(out_dir) as tmp:
        for name, (_, picture) in pictures.items():
            picture.save(tmp / name, optimize=True)
        for name, data in (files or {}).items():
            write_json(tmp / name, data)
        write_json(tmp / "validate.json", report)
        write_text(tmp / "validate.md", to_markdown(report))
        write_text(tmp / "validate.html", to_html(report))
