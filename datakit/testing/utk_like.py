"""A synthetic folder shaped like the real UTKFace dump, for benchmarks and scale tests.

Shaped like it, not made from it: the same number of files (23,708), the same race x gender
counts, the same file-size distribution (2-12 KB, about 5 KB average, about 118 MB in all) and
the same JPEG properties (baseline, 200x200, 4:2:0, JFIF, standard Huffman tables, quality 75),
real-style names with the dump's quirks (three names missing the race field, a 16- and two
18-digit timestamps, a stray space, `...357jpg.chip.jpg`), 375 groups of byte-identical files
of which 104 disagree on race or gender, and a few near-duplicates (one picture re-encoded at
another quality under another name and age). `RACE_GENDER_COUNTS`, `SIZE_QUANTILES` and the
other figures below were measured on the real dump; no picture of it is used.

Every picture is distinct (its own face layout, colours and low-frequency background), so a
perceptual-hash grouping finds only the planted near-duplicates. File sizes come from a texture
whose strength is fitted per picture (two encodes) to a size drawn from the measured
distribution. Picture i is drawn from (seed, i) alone, so the folder does not depend on how the
work is split over worker processes; the same (n, seed) gives the same bytes.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

N_FILES = 23708
SIDE = 200
QUALITY = 75
# (race, gender): files, among the 23,705 names that parse (real dump).
RACE_GENDER_COUNTS = {(0, 0): 5477, (0, 1): 4601, (1, 0): 2318, (1, 1): 2208, (2, 0): 1575, (2, 1): 1859,
                      (3, 0): 2261, (3, 1): 1714, (4, 0): 760, (4, 1): 932}
MISSING_FIELD = 3  # names like 39_1_20170116174525125.jpg.chip.jpg (no race field)
# Byte-identical groups: sizes -> count, and how many of the groups disagree on race or gender.
DUPLICATE_GROUPS = {2: 361, 3: 13, 4: 1}
CONFLICTING_GROUPS = 104
SAME_AGE_SHARE = 170 / 375  # groups whose copies also agree on the age
NEAR_DUPLICATE_SHARE = 0.0025  # planted re-encodings (about 60 pairs at full size)
# File size in bytes at these percentiles of the real dump.
SIZE_PERCENTILES = (0, 0.1, 0.5, 1, *np.arange(2.5, 97.6, 2.5).tolist(), 99, 99.5, 99.9, 100)
SIZE_QUANTILES = (2060, 3146, 3397, 3526, 3730, 3913, 4031, 4119, 4196, 4268, 4332, 4392, 4453, 4508, 4556,
                  4603, 4651, 4696, 4742, 4790, 4835, 4880, 4927, 4972, 5020, 5068, 5114, 5164, 5212, 5264,
                  5318, 5373, 5433, 5495, 5567, 5648, 5732, 5826, 5945, 6094, 6276, 6540, 6958, 7598, 8059,
                  9143, 12025)
# Ages 1-116 with the dump's shape: many babies, a peak in the mid twenties, a long tail.
_AGE_WEIGHTS = np.interp(np.arange(1, 117), [1, 2, 4, 10, 18, 24, 26, 28, 35, 45, 55, 65, 75, 85, 95, 116],
                         [1123, 480, 270, 160, 250, 860, 1500, 900, 800, 350, 280, 180, 110, 60, 25, 2])
# Lenient-name quirks of the real dump (they parse): tail -> how many.
_QUIRKS = ("short", "space", "long", "long", "nodot")
_SKIN = ((190, 150, 130), (110, 80, 60), (200, 170, 140), (150, 110, 80), (170, 140, 120))  # per race, RGB
_BANK = 16  # textures per worker process, reused with random crops and flips


def _scaled(count: int, n: int, keep_one: bool = True) -> int:
    k = round(count * n / N_FILES)
    return max(k, 1) if keep_one and count else k


def _class_slots(n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """n - missing-field names' labels in the real proportions (largest remainder), shuffled."""
    m = n - _scaled(MISSING_FIELD, n)
    keys = list(RACE_GENDER_COUNTS)
    exact = np.array([RACE_GENDER_COUNTS[k] for k in keys], float) * m / sum(RACE_GENDER_COUNTS.values())
    counts = np.floor(exact).astype(int)
    counts[np.argsort(-(exact - counts), kind="stable")[: m - counts.sum()]] += 1
    slots = [k for k, c in zip(keys, counts) for _ in range(c)]
    return [slots[i] for i in rng.permutation(len(slots))]


class _Names:
    def __init__(self, rng: np.random.Generator):
        self.rng, self.used = rng, set()

    def stamp(self, digits: int = 17) -> str:
        while True:
            r = self.rng
            s = (f"201701{r.integers(4, 21):02d}{r.integers(0, 24):02d}{r.integers(0, 60):02d}"
                 f"{r.integers(0, 60):02d}{r.integers(0, 1000):03d}")
            s = s[:digits] if digits <= 17 else s + "".join(str(d) for d in r.integers(0, 10, digits - 17))
            if s not in self.used:
                self.used.add(s)
                return s

    def name(self, age: int, gender: int, race: int | None, quirk: str = "") -> str:
        head = f"{age}_{gender}_" if race is None else f"{age}_{gender}_{race}_"
        if quirk == "short":
            return f"{head}{self.stamp(16)}.jpg.chip.jpg"
        if quirk == "long":
            return f"{head}{self.stamp(18)}.jpg.chip.jpg"
        if quirk == "space":
            return f"{head}{self.stamp()} .jpg.chip.jpg"
        if quirk == "nodot":
            return f"{head}{self.stamp()}jpg.chip.jpg"
        return f"{head}{self.stamp()}.jpg.chip.jpg"


def plan(n: int = N_FILES, seed: int = 0) -> tuple[list[tuple], dict]:
    """The folder's layout without pixels: tasks [(picture id, target bytes, [names], [(name, quality)])]
    and the description `make_utk_like_folder` returns."""
    if n < 50:
        raise ValueError(f"n={n}: at least 50 files (room for every kind of quirk)")
    rng = np.random.default_rng([seed, 0x757])
    names = _Names(rng)
    ages = rng.choice(np.arange(1, 117), size=n, p=_AGE_WEIGHTS / _AGE_WEIGHTS.sum())
    slots = _class_slots(n, rng)
    by_class: dict[tuple, list[int]] = {}
    for i, key in enumerate(slots):
        by_class.setdefault(key, []).append(i)
    free = {k: list(v) for k, v in by_class.items()}  # slot indices per class, popped from the end

    def take(key):
        return free[key].pop()

    sizes = [s for s, c in DUPLICATE_GROUPS.items() for _ in range(_scaled(c, n, keep_one=s == 2))]
    n_conf = min(_scaled(CONFLICTING_GROUPS, n), len(sizes) - 1)
    conflicting = set(rng.choice(len(sizes), n_conf, replace=False).tolist())
    keys = list(RACE_GENDER_COUNTS)
    groups = []  # [[slot, ...]] byte-identical
    for g, size in enumerate(sizes):
        master_key = keys[rng.integers(len(keys))] if g not in conflicting else None
        if master_key is None:  # conflicting: the first two copies disagree on the class
            a, b = rng.choice(len(keys), 2, replace=False)
            members = [keys[a], keys[b]] + [keys[rng.integers(len(keys))] for _ in range(size - 2)]
        else:
            members = [master_key] * size
        members = [k if free[k] else max(free, key=lambda c: len(free[c])) for k in members]
        groups.append([take(k) for k in members])
        if rng.random() < SAME_AGE_SHARE:
            for s in groups[-1][1:]:
                ages[s] = ages[groups[-1][0]]
    n_near = max(1, round(n * NEAR_DUPLICATE_SHARE))
    near = []  # (original slot, re-encoded slot, quality)
    for j in range(n_near):
        key = max(free, key=lambda c: len(free[c]))
        other = (key[0], 1 - key[1]) if j % 5 == 4 else key  # one in five disagrees on the gender
        other = other if len(free[other]) > (other == key) else key
        a, b = take(key), take(other)
        near.append((a, b, int(rng.choice([60, 65, 70, 80, 85, 90]))))
    singles = [s for k in free for s in free[k]]
    quirky = {s: q for s, q in zip(rng.choice(singles, len(_QUIRKS), replace=False).tolist(), _QUIRKS)}

    quirky_names = []

    def name_of(slot):
        race, gender = slots[slot]
        name = names.name(int(ages[slot]), gender, race, quirky.get(slot, ""))
        if slot in quirky:
            quirky_names.append(name)
        return name

    u = rng.random(n)
    targets = np.interp(u * 100, SIZE_PERCENTILES, SIZE_QUANTILES).astype(int)
    tasks, info = [], {"identical": [], "conflicting": [], "near_duplicates": [], "bad_names": []}
    for group in groups:
        files = [name_of(s) for s in group]
        info["conflicting" if len({slots[s] for s in group}) > 1 else "identical"].append(files)
        tasks.append((group[0], int(targets[group[0]]), files, []))
    for a, b, q in near:
        fa, fb = name_of(a), name_of(b)
        info["near_duplicates"].append({"files": [fa, fb], "quality": q, "same_class": slots[a] == slots[b]})
        tasks.append((a, int(targets[a]), [fa], [(fb, q)]))
    for s in singles:
        tasks.append((s, int(targets[s]), [name_of(s)], []))
    for k in range(n - len(slots)):  # names missing the race field: their pictures come after the slots
        pid = len(slots) + k
        bad = names.name(int(ages[rng.integers(n)]), int(rng.integers(2)), None)
        info["bad_names"].append(bad)
        tasks.append((pid, int(targets[pid]), [bad], []))
    tasks.sort(key=lambda t: t[0])
    counts: dict[str, int] = {}
    for t in tasks:
        for f in t[2] + [name for name, _ in t[3]]:
            if f not in info["bad_names"]:
                key = f"{f.split('_')[2]},{f.split('_')[1]}"
                counts[key] = counts.get(key, 0) + 1
    info["classes"] = dict(sorted(counts.items()))
    info["quirky_names"] = sorted(quirky_names)
    return tasks, info


# ---- pictures ------------------------------------------------------------------------------------

_textures: list[np.ndarray] = []


def _texture(rng: np.random.Generator) -> np.ndarray:
    """A (SIDE, SIDE, 3) float32 texture: mid-frequency blotches plus grain, from a per-process
    bank (crops and flips of it: the texture only sets the file size; the picture's identity is
    its layout)."""
    if not _textures:
        bank_rng = np.random.default_rng(0x7E57)
        big = 2 * SIDE
        for _ in range(_BANK):
            mid = cv2.resize(bank_rng.normal(0, 1, (big // 5, big // 5, 3)).astype(np.float32), (big, big),
                             interpolation=cv2.INTER_CUBIC)
            _textures.append(mid + 0.25 * bank_rng.normal(0, 1, (big, big, 3)).astype(np.float32))
    tex = _textures[int(rng.integers(_BANK))]
    y, x = (int(v) for v in rng.integers(0, SIDE, 2))
    tex = tex[y:y + SIDE, x:x + SIDE]
    return tex[::-1] if rng.random() < 0.5 else tex


def _picture(rng: np.random.Generator, race: int, gender: int) -> np.ndarray:
    """A float32 RGB face-like layout: background, face ellipse in a race-dependent skin tone,
    eyes, mouth, and long hair for gender 1; every geometry and colour drawn from `rng`."""
    s = SIDE
    bg = rng.normal(0, 45, (3, 3, 3)).astype(np.float32) + rng.uniform(40, 215, 3).astype(np.float32)
    img = cv2.resize(bg, (s, s), interpolation=cv2.INTER_CUBIC)
    face = np.zeros((s, s), np.float32)
    cx, cy = (int(v) for v in rng.integers(s * 2 // 5, s * 3 // 5 + 1, 2))
    ax, ay = int(rng.integers(45, 62)), int(rng.integers(58, 78))
    cv2.ellipse(face, (cx, cy), (ax, ay), float(rng.uniform(-15, 15)), 0, 360, 1.0, -1)
    face = cv2.GaussianBlur(face, (0, 0), 3)[..., None]
    skin = np.array(_SKIN[race], np.float32) * rng.uniform(0.8, 1.15, 3).astype(np.float32)
    img = img * (1 - face) + skin * face

    def ink(scale):
        return tuple(float(v) for v in skin * scale)

    for dx in (-1, 1):
        cv2.ellipse(img, (cx + dx * ax // 2, cy - ay // 5), (int(rng.integers(6, 11)), int(rng.integers(3, 6))),
                    0, 0, 360, ink(rng.uniform(0.2, 0.5)), -1)
    cv2.ellipse(img, (cx, cy + ay // 2), (int(rng.integers(12, 22)), int(rng.integers(3, 7))), 0, 0, 360,
                ink(rng.uniform(0.4, 0.7)), -1)
    if gender:
        hair = tuple(float(v) for v in rng.uniform(20, 90, 3))
        for dx in (-1, 1):
            cv2.rectangle(img, (cx + dx * ax - 14, cy - ay // 3), (cx + dx * ax + 14, min(s, cy + ay + 30)), hair, -1)
    return img


def _encode(rgb_f: np.ndarray, quality: int) -> bytes:
    bgr = np.clip(rgb_f[..., ::-1], 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


# Mean file size at texture strength d (measured on these pictures): the first guess of the fit.
_CURVE_D = (0.0, 2, 4, 6, 8, 12, 16, 24, 32, 48)
_CURVE_BYTES = (3050, 3420, 4060, 4590, 5060, 5930, 6750, 8250, 9580, 12400)


def _fit(base: np.ndarray, tex: np.ndarray, target: int) -> bytes:
    """The picture at quality 75 with the texture strength that brings it near `target` bytes."""
    d = float(np.interp(target, _CURVE_BYTES, _CURVE_D))
    data = _encode(base + d * tex, QUALITY)
    slope = float(np.interp(d, _CURVE_D[1:], np.diff(_CURVE_BYTES) / np.diff(_CURVE_D)))
    d2 = min(max(d + (target - len(data)) / slope, 0.0), 64.0)
    if abs(len(data) - target) > 0.03 * target and d2 != d:
        data2 = _encode(base + d2 * tex, QUALITY)
        if abs(len(data2) - target) < abs(len(data) - target):
            return data2
    return data


def _labels_of(name: str) -> tuple[int, int]:
    parts = name.split("_")
    return (int(parts[2]) if len(parts) > 3 else 4, int(parts[1]))


def _write_task(dest: str, seed: int, task: tuple) -> int:
    pid, target, files, near = task
    rng = np.random.default_rng([seed, pid])
    race, gender = _labels_of(files[0])
    base = _picture(rng, race, gender)
    tex = _texture(rng)
    data = _fit(base, tex, target)
    written = 0
    for name in files:
        with open(os.path.join(dest, name), "wb") as f:
            written += f.write(data)
    for name, quality in near:  # the same picture re-encoded: near-identical, not byte-identical
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        with open(os.path.join(dest, name), "wb") as f:
            written += f.write(buf.tobytes())
    return written


def _write_chunk(dest: str, seed: int, tasks: list) -> int:
    cv2.setNumThreads(1)
    return sum(_write_task(dest, seed, t) for t in tasks)


def make_utk_like_folder(dest: str | os.PathLike, n: int = N_FILES, seed: int = 0,
                         workers: int | None = None) -> dict:
    """Write `n` files shaped like the real UTKFace dump into `dest` (see the module doc).

    Returns: `files`, `bytes`, `classes` {"race,gender": files}, `identical` and `conflicting`
    (lists of byte-identical file groups), `near_duplicates` ([{files, quality, same_class}]),
    `bad_names` (names that do not parse), `quirky_names` (lenient names that do)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tasks, info = plan(n, seed)
    workers = max(1, workers or os.cpu_count() or 1)
    step = max(1, min(256, -(-len(tasks) // (4 * workers))))
    chunks = [tasks[i:i + step] for i in range(0, len(tasks), step)]
    if workers == 1 or len(chunks) == 1:
        total = sum(_write_chunk(str(dest), seed, c) for c in chunks)
    else:
        with ProcessPoolExecutor(workers) as pool:
            total = sum(pool.map(_write_chunk, [str(dest)] * len(chunks), [seed] * len(chunks), chunks))
    return {"files": n, "bytes": total, **info}
