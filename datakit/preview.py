"""`preview`: a contact sheet PNG, one row per class, read back from the chosen output format.

Why read back: a wrong label, a swapped channel order or a broken picture in one format shows only
when that format itself is decoded, so the sheet is drawn from exactly what a training job would
read (`Dataset.items`, no TensorFlow). The split is streamed once: every record is counted, and only
the first `per_class` pictures of each class are decoded and kept.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from datakit.datasets import Dataset, ReadError, open_dataset
from datakit.atomic import write_bytes
from datakit.errors import DatakitError
from datakit.progress import null_progress

BACKGROUND = (255, 255, 255)
STRIPE = (242, 244, 247)
INK = (20, 24, 31)
MUTED = (96, 104, 116)
EMPTY = (214, 218, 224)
ALERT = (176, 32, 32)
PAD = 6


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # scalable default font (Pillow >= 10.1)
    except TypeError:  # pragma: no cover - older Pillow: the small bitmap font
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return int(right - left)


def _cell(pixels: np.ndarray, side: int) -> Image.Image:
    im = Image.fromarray(np.ascontiguousarray(pixels))
    if im.size == (side, side):
        return im
    # Small pictures (CIFAR's 32 px) are enlarged without smoothing, so every pixel stays visible.
    up = im.width < side and im.height < side
    return im.resize((side, side), Image.Resampling.NEAREST if up else Image.Resampling.LANCZOS)


def collect(src: Dataset, split: str, fmt: str, per_class: int, progress=null_progress) -> dict:
    """Stream one split: counts per label, the first `per_class` decodable pictures of each label."""
    n = len(src.classes)
    counts: dict[int, int] = {}
    picks: dict[int, list[tuple[np.ndarray, str]]] = {}
    problems: list[str] = []
    bar = progress(desc="preview", total=None, unit="img")
    for item in src.items(split, fmt, pixels=False, on_error=lambda where, why: problems.append(f"{where}: {why}")):
        bar.update(1)
        label = item.label if 0 <= item.label < n else -1  # -1: a label outside the classes
        counts[label] = counts.get(label, 0) + 1
        chosen = picks.setdefault(label, [])
        if len(chosen) < per_class:
            try:
                chosen.append((np.array(item.rgb()), item.filename))
            except ReadError as exc:
                problems.append(str(exc))
    bar.close()
    return {"counts": counts, "picks": picks, "problems": problems}


def augment_pictures(pictures: list[np.ndarray], src: Dataset, seed: int = 0) -> list[np.ndarray]:
    """The pictures after the training augmentation the pipelines apply to `src` (datakit.augment's
    fused batch function with seeded draws), de-standardized for display by min-max per picture."""
    from datakit import augment
    from datakit.doctor import training_augment

    if not pictures:
        return []
    aug = training_augment(src)
    batch = np.stack(pictures)
    draws = augment.draw(aug, len(batch), batch.shape[1:3], augment.seed_pair(seed))
    out = np.asarray(augment.apply_fast(aug, batch, draws))
    return [to_display(p) for p in out]


def to_display(picture: np.ndarray) -> np.ndarray:
    """Any real-valued picture (e.g. standardized: mean 0, std 1) -> uint8 by min-max per picture."""
    p = np.asarray(picture, dtype=np.float32)
    if p.ndim == 2:
        p = np.repeat(p[..., None], 3, axis=2)
    lo, hi = float(p.min()), float(p.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((p - lo) * scale, 0, 255).round().astype(np.uint8)


def draw_sheet(rows: list[tuple[str, str, list[np.ndarray]]], per_class: int, thumb: int,
               title: str, subtitles: list[str]) -> tuple[Image.Image, list[list[tuple[int, int]]]]:
    """rows: (name, caption, pictures). A header, then one labelled row of thumbnails per class.

    Returns the sheet and, per row, the top-left corner of each picture drawn."""
    f_title, f_sub, f_name, f_count = _font(22), _font(15), _font(18), _font(15)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max([160] + [max(_text_width(probe, name, f_name), _text_width(probe, cap, f_count)) + 3 * PAD
                           for name, cap, _ in rows])
    grid_w = per_class * (thumb + PAD) + PAD
    width = max([label_w + grid_w, _text_width(probe, title, f_title) + 4 * PAD]
                + [_text_width(probe, line, f_sub) + 4 * PAD for line in subtitles])
    header = 48 + 20 * len(subtitles)
    row_h = thumb + 2 * PAD
    sheet = Image.new("RGB", (width, header + row_h * len(rows) + PAD), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((2 * PAD, 10), title, font=f_title, fill=INK)
    for i, line in enumerate(subtitles):
        draw.text((2 * PAD, 42 + 20 * i), line, font=f_sub, fill=MUTED)
    cells: list[list[tuple[int, int]]] = []
    for r, (name, caption, pictures) in enumerate(rows):
        cells.append([])
        top = header + r * row_h
        if r % 2 == 0:
            draw.rectangle([0, top, width, top + row_h - 1], fill=STRIPE)
        colour = ALERT if name.startswith("(") else INK
        draw.text((2 * PAD, top + row_h // 2 - 20), name, font=f_name, fill=colour)
        draw.text((2 * PAD, top + row_h // 2 + 2), caption, font=f_count, fill=MUTED)
        for c in range(per_class):
            x, y = label_w + c * (thumb + PAD), top + PAD
            if c < len(pictures):
                sheet.paste(_cell(pictures[c], thumb), (x, y))
                cells[-1].append((x, y))
            else:
                draw.rectangle([x, y, x + thumb - 1, y + thumb - 1], fill=EMPTY)
    return sheet, cells


def contact_sheet(path, out, split: str = "train", per_class: int = 8, fmt: str | None = None,
                  augmented: bool = False, seed: int = 0, thumb: int | None = None, label_mode: str | None = None,
                  palette: bool = False, progress=null_progress) -> dict:
    """Write a PNG contact sheet of `split` of any dataset folder (a build output, a CIFAR folder) to `out`.

    palette=True stores a 256-colour PNG (about 4x smaller, colours approximate; the subtitle says so).
    """
    if per_class < 1:
        raise DatakitError(f"--per-class {per_class}: must be at least 1")
    src = open_dataset(path, label_mode)
    split, fmt = src.check_split(split), src.check_format(fmt)
    thumb = thumb or (96 if len(src.classes) <= 20 else 56)
    if thumb < 16:
        raise DatakitError(f"--thumb {thumb}: too small to see anything (at least 16)")
    got = collect(src, split, fmt, per_class, progress)
    counts, picks = got["counts"], got["picks"]
    augment_desc = None
    if augmented:
        flat = [(label, name, p) for label, chosen in sorted(picks.items()) for p, name in chosen]
        shown = augment_pictures([p for _, _, p in flat], src, seed=seed)
        picks = {}
        for (label, name, _), p in zip(flat, shown):
            picks.setdefault(label, []).append((p, name))
        from datakit.doctor import training_augment

        augment_desc = training_augment(src).describe()
    expected = src.expected_counts(split) or {}
    rows = []
    for label, name in enumerate(src.classes):
        n = counts.get(label, 0)
        differs = name in expected and expected[name] != n
        caption = f"{n} pictures" + (f" (manifest {expected[name]})" if differs else "")
        rows.append((name, caption, [p for p, _ in picks.get(label, [])]))
    if counts.get(-1):
        rows.append(("(label not a class)", f"{counts[-1]} pictures", [p for p, _ in picks.get(-1, [])]))
    total = sum(counts.values())
    title = f"{src.root.name}: {split} split, {fmt}, {per_class} per class"
    subtitles = [f"{total} pictures in {len(src.classes)} classes, "
                 + ("after the training augmentation (shown min-max per picture)" if augmented else "as stored")
                 + (", 256-colour palette" if palette else "")]
    if augmented:
        subtitles.append(f"augmentation: {augment_desc}")
    if got["problems"]:
        subtitles.append(f"{len(got['problems'])} records could not be read (see datakit doctor)")
    sheet, cells = draw_sheet(rows, per_class, thumb, title, subtitles)
    if palette:
        sheet = sheet.quantize(256, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    out = Path(out)
    if out.parent and not out.parent.exists():
        raise DatakitError(f"{out}: folder {out.parent} does not exist")
    write_bytes(out, buf.getvalue())
    return {"out": str(out), "source": str(src.root), "kind": src.key, "split": split, "format": fmt,
            "augmented": augmented, "per_class": per_class, "classes": src.classes,
            "counts": {src.classes[k] if k >= 0 else "(label not a class)": v for k, v in sorted(counts.items())},
            "shown": {src.classes[k] if k >= 0 else "(label not a class)": [n for _, n in v]
                      for k, v in sorted(picks.items())},
            "problems": got["problems"], "width": sheet.width, "height": sheet.height, "bytes": len(buf.getvalue()),
            "thumb": thumb, "cells": {name: [list(xy) for xy in row] for (name, _, _), row in zip(rows, cells)}}
