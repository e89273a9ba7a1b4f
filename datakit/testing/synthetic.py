"""Synthetic UTKFace-style folders: learnable pictures under real UTKFace names, plus the
quirks of the real dump on request.

Race drives the colour of the background, gender the shape drawn on it (circle or square),
with jittered position, size and noise, so a small CNN can learn race x gender while a model
that ignores the pixels stays at chance. `broken=True` adds what real dumps contain: names that
do not parse, out-of-range fields, a missing field, empty and non-image files, a truncated JPEG,
odd but valid images (grayscale, CMYK, PNG bytes behind .jpg, progressive, other sizes),
lenient-name variants, exact duplicates (same and conflicting labels) and stray entries.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# One background colour per race (RGB), far apart so the class is learnable.
RACE_COLOURS = ((200, 60, 60), (60, 170, 70), (60, 90, 200), (200, 180, 50), (150, 60, 170))


def _timestamp(rng: np.random.Generator, digits: int = 17) -> str:
    day = f"2017{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
    rest = "".join(str(d) for d in rng.integers(0, 10, size=max(digits - len(day), 0)))
    return day + rest


def utk_name(age: int, gender: int, race: int, rng: np.random.Generator) -> str:
    return f"{age}_{gender}_{race}_{_timestamp(rng)}.jpg.chip.jpg"


def draw_face(gender: int, race: int, rng: np.random.Generator, size: int = 200) -> np.ndarray:
    """An RGB uint8 picture: race -> background colour, gender -> circle (0) or square (1)."""
    base = np.array(RACE_COLOURS[race], dtype=np.float32)
    img = np.empty((size, size, 3), np.float32)
    img[:] = base * rng.uniform(0.8, 1.2)
    # Smooth blotches plus mild grain: photo-like noise that JPEG keeps reasonably well.
    blotch = rng.normal(0, 14, size=(max(size // 16, 2),) * 2 + (3,)).astype(np.float32)
    img += cv2.resize(blotch, (size, size), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 3, size=(size, size, 3))
    canvas = np.clip(img, 0, 255).astype(np.uint8)
    cx, cy = (int(v) for v in rng.integers(size * 3 // 10, size * 7 // 10, size=2))
    r = int(rng.integers(size // 8, size // 4))
    ink = tuple(int(v) for v in (255 - base * rng.uniform(0.5, 1.0)))
    if gender == 0:
        cv2.circle(canvas, (cx, cy), r, ink, thickness=-1)
    else:
        cv2.rectangle(canvas, (cx - r, cy - r), (cx + r, cy + r), ink, thickness=-1)
    return canvas


def jpeg_bytes(rgb: np.ndarray, quality: int = 90, **pil_options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, **pil_options)
    return buf.getvalue()


def _encode(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return enc.tobytes()


def make_utk_folder(dest: str | Path, per_cell: int = 40, races=(0, 1, 2, 3), seed: int = 0,
                    broken: bool = False, size: int = 200) -> dict:
    """Write `per_cell` clean pictures per race x gender cell under real UTKFace names.

    Returns what was written: `images` (clean pictures), `valid_extra` ({(race, gender): n} odd but
    valid pictures counted in their class), `bad` ({file: expected reason keyword}), `stray`
    (ignored entries), `duplicates` and `conflicts` (copies planted), `broken` (count of bad + stray).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names: set[str] = set()

    def fresh_name(age, gender, race, tail=".jpg.chip.jpg"):
        while True:
            name = f"{age}_{gender}_{race}_{_timestamp(rng)}{tail}"
            if name not in names:
                names.add(name)
                return name

    clean: list[str] = []
    for race in races:
        for gender in (0, 1):
            for _ in range(per_cell):
                name = fresh_name(int(rng.integers(1, 91)), gender, race)
                (dest / name).write_bytes(_encode(draw_face(gender, race, rng, size)))
                clean.append(name)
    info = {"images": len(clean), "valid_extra": {}, "bad": {}, "stray": [], "duplicates": [], "conflicts": [],
            "broken": 0}
    if broken:
        _add_quirks(dest, rng, races, size, fresh_name, clean, info)
    return info


def _add_quirks(dest, rng, races, size, fresh_name, clean, info) -> None:
    r0, r1 = races[0], races[-1]
    picture = _encode(draw_face(0, r0, rng, size))

    def bad(name, data, reason):
        (dest / name).write_bytes(data)
        info["bad"][name] = reason

    def extra(race, gender, name, data):
        (dest / name).write_bytes(data)
        key = (race, gender)
        info["valid_extra"][key] = info["valid_extra"].get(key, 0) + 1

    # Names whose labels cannot be trusted.
    bad("abc_0_1_20170109150557335.jpg.chip.jpg", picture, "not a number")
    bad("39_1_20170116174525125.jpg.chip.jpg", picture, "missing field")
    bad("61_1_.jpg.chip.jpg", picture, "missing field")
    bad(f"130_0_{r0}_20170109150557335.jpg.chip.jpg", picture, "age 130")
    bad(f"20_2_{r0}_20170109150557335.jpg.chip.jpg", picture, "gender 2")
    bad("20_0_7_20170109150557335.jpg.chip.jpg", picture, "race 7")
    # Content that is not a usable picture.
    bad(fresh_name(30, 1, r1), b"", "empty")
    bad(fresh_name(30, 1, r1), b"this is not a picture\n" * 20, "not an image")
    full = _encode(draw_face(1, r1, rng, size))
    bad(fresh_name(31, 1, r1), full[: len(full) // 2], "truncated")
    # Odd but valid pictures: each counts in its class.
    gray = cv2.cvtColor(draw_face(1, r0, rng, size), cv2.COLOR_RGB2GRAY)
    extra(r0, 1, fresh_name(40, 1, r0), jpeg_bytes(gray))
    cmyk = io.BytesIO()
    Image.fromarray(draw_face(0, r1, rng, size)).convert("CMYK").save(cmyk, format="JPEG", quality=92)
    extra(r1, 0, fresh_name(41, 0, r1), cmyk.getvalue())
    png = io.BytesIO()
    Image.fromarray(draw_face(1, r1, rng, size)).save(png, format="PNG")
    extra(r1, 1, fresh_name(42, 1, r1), png.getvalue())
    extra(r0, 0, fresh_name(43, 0, r0), jpeg_bytes(draw_face(0, r0, rng, size), progressive=True))
    extra(r0, 1, fresh_name(44, 1, r0), _encode(cv2.resize(draw_face(1, r0, rng, size), (size + 50, size - 20))))
    # Lenient names: a stray space, a missing dot, a longer and a shorter timestamp.
    extra(r1, 0, f"45_0_{r1}_20170116220224657 .jpg.chip.jpg", _encode(draw_face(0, r1, rng, size)))
    extra(r1, 1, f"46_1_{r1}_20170116232725357jpg.chip.jpg", _encode(draw_face(1, r1, rng, size)))
    extra(r0, 0, f"47_0_{r0}_201701162327253571234.jpg.chip.jpg", _encode(draw_face(0, r0, rng, size)))
    extra(r0, 1, f"48_1_{r0}_2017011.jpg", _encode(draw_face(1, r0, rng, size)))
    # Exact duplicates: the same bytes under a second name with the same labels (counted once) ...
    for original in (clean[0], clean[len(clean) // 2]):
        a, g, r = original.split("_")[:3]
        copy = fresh_name(a, g, r)
        (dest / copy).write_bytes((dest / original).read_bytes())
        info["duplicates"].append((original, copy))
    # ... and under a name that disagrees on gender: no copy may be used.
    victim = clean[-1]
    a, g, r = victim.split("_")[:3]
    copy = fresh_name(a, 1 - int(g), r)
    (dest / copy).write_bytes((dest / victim).read_bytes())
    info["conflicts"].append((victim, copy))
    # Stray entries.
    (dest / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    (dest / "notes.txt").write_text("downloaded from somewhere\n")
    (dest / "extra").mkdir(exist_ok=True)
    (dest / "extra" / clean[1]).write_bytes((dest / clean[1]).read_bytes())
    info["stray"] = [".DS_Store", "notes.txt", "extra"]
    info["broken"] = len(info["bad"]) + len(info["stray"])
