"""Near-identical pictures: a 64-bit perceptual hash, a fast search for close hashes, and the
thumbnail test that confirms a match. One home, used by `doctor` (across splits of a build) and by
the builder (grouping before the split).

Near-duplicates: perceptual hashes at most NEAR_BITS apart, confirmed when the 8x8 thumbnails,
each standardized (mean 0, std 1: blind to brightness and contrast), differ by at most NEAR_THUMB
on average. Measured on synthetic 200 px pictures: the same picture re-encoded at JPEG quality 60,
brightened by 15, resized 200->150->200 or contrast-stretched 1.2x stays within 4-6 bits and 0.04;
distinct pictures that merely look alike (same colour, a circle a few pixels away) are 0.12 or more.
"""

from __future__ import annotations

import cv2
import numpy as np

NEAR_BITS = 6
NEAR_THUMB = 0.08


def small(pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The 32x32 area-averaged picture both summaries are computed from (written into `out`,
    (32, 32, 3) uint8, when given)."""
    return cv2.resize(np.ascontiguousarray(pixels), (32, 32), dst=out, interpolation=cv2.INTER_AREA)


def phash(small32: np.ndarray) -> int:
    """64-bit DCT hash of the grayscale 32x32 picture (bits above the median AC coefficient)."""
    gray = cv2.cvtColor(small32, cv2.COLOR_RGB2GRAY).astype(np.float32)
    dct = cv2.dct(gray)[:8, :8].ravel()
    bits = dct > np.partition(dct[1:], 31)[31]  # the median of the 63 AC coefficients
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def thumb(small32: np.ndarray) -> np.ndarray:
    """(8, 8, 3) uint8 area-averaged thumbnail."""
    return cv2.resize(small32, (8, 8), interpolation=cv2.INTER_AREA)


def near_pairs(hashes_a: np.ndarray, hashes_b: np.ndarray, max_bits: int = NEAR_BITS) -> list[tuple[int, np.ndarray]]:
    """For each i in a with a match, (i, the sorted indices j in b with popcount(a[i] ^ b[j]) <= max_bits)."""
    pairs = near_pairs_between(hashes_a, hashes_b, max_bits)
    if not len(pairs):
        return []
    cuts = np.flatnonzero(pairs[1:, 0] != pairs[:-1, 0]) + 1
    return [(int(run[0, 0]), run[:, 1]) for run in np.split(pairs, cuts)]


def standardized(thumbs) -> np.ndarray:
    """Thumbnails as rows of mean 0, std 1 (blind to brightness and contrast)."""
    t = np.stack(thumbs).reshape(len(thumbs), -1).astype(np.float32)
    t -= t.mean(axis=1, keepdims=True)
    t /= np.maximum(t.std(axis=1, keepdims=True), 1.0)
    return t


def _dct_rows(n: int = 32, k: int = 8) -> np.ndarray:
    """The first k rows of the orthonormal DCT-II matrix (what cv2.dct computes)."""
    i = np.arange(n)
    rows = np.cos(np.pi * (2 * i[None, :] + 1) * np.arange(k)[:, None] / (2 * n)) * np.sqrt(2.0 / n)
    rows[0] /= np.sqrt(2.0)
    return rows.astype(np.float32)


_DCT8 = _dct_rows()


def summaries(smalls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`phash` and `thumb` of a batch of 32x32 RGB pictures at once: (uint64 [N], uint8 [N, 8, 8, 3]).

    The same arithmetic as the per-picture functions, on the batch stacked into one tall picture
    (OpenCV's gray conversion; the 4x4 area average never crosses two pictures); the DCT as a
    matrix product, so a hash may differ from `phash` by a bit where a coefficient ties the median."""
    x = np.ascontiguousarray(smalls, dtype=np.uint8)
    n = len(x)
    if n == 0:
        return np.zeros(0, np.uint64), np.zeros((0, 8, 8, 3), np.uint8)
    tall = x.reshape(n * 32, 32, 3)
    gray = cv2.cvtColor(tall, cv2.COLOR_RGB2GRAY).astype(np.float32).reshape(n, 32, 32)
    # D @ (g @ D.T) for every picture: g @ D.T is one tall product, then n small ones. In this
    # order OpenBLAS stays on the calling thread (`D @ g` first would wake its threads for small
    # batches, and they spin on cores the other worker processes need); several times faster
    # than OpenCV's gemm for these shapes
    dct = np.matmul(_DCT8, gray @ _DCT8.T).reshape(n, 64)
    median = np.partition(dct[:, 1:], 31, axis=1)[:, 31:32]
    hashes = np.packbits(dct > median, axis=1).view(">u8").ravel().astype(np.uint64)
    thumbs = cv2.resize(tall, (8, n * 8), interpolation=cv2.INTER_AREA).reshape(n, 8, 8, 3)
    return hashes, thumbs


def _bands(max_bits: int) -> list[tuple[int, int]]:
    """B = max(4, max_bits // 2 + 1) bands of at most 16 bits: two hashes within max_bits < 2B
    differ by at most one bit in some band (pigeonhole)."""
    edges = np.linspace(0, 64, max(4, max_bits // 2 + 1) + 1).astype(int).tolist()
    return list(zip(edges[:-1], edges[1:]))


def _band_keys(h: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return ((h >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)).astype(np.int64)


def _table(keys: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, count, start): the hashes sorted by band key, and where each key's run begins in it
    (a lookup table over every key of the band, no search)."""
    order = np.argsort(keys, kind="stable")
    count = np.bincount(keys, minlength=1 << width)
    return order, count, np.cumsum(count) - count


def _pairs(parts: list[np.ndarray], n: int) -> np.ndarray:
    flat = sorted_unique(np.concatenate(parts))
    return np.stack([flat // n, flat % n], axis=1)


def near_pairs_within(hashes: np.ndarray, max_bits: int = NEAR_BITS) -> np.ndarray:
    """Every pair (i, j), i < j, of `hashes` at most max_bits apart: int64 [P, 2], sorted.

    Each band (`_bands`) pairs the hashes of equal keys and of keys one bit apart, and the full
    distance is checked on those candidates. Wider bands than single-key multi-index hashing
    (max_bits + 1 bands that must match exactly): face hashes crowd a few 9-bit keys, and the
    candidates fall to about a fifth. All in numpy index arithmetic, no Python loop per picture."""
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    if n < 2:
        return np.zeros((0, 2), np.int64)
    pos = np.arange(n)
    found = []
    for lo, hi in _bands(max_bits):
        width = hi - lo
        keys = _band_keys(h, lo, hi)
        order, count, start = _table(keys, width)
        # keys one bit apart, each pair once: the flip that sets a bit the key lacks
        flipped = keys[:, None] ^ (np.int64(1) << np.arange(width))
        up = flipped > keys[:, None]
        query = np.repeat(pos, up.sum(axis=1))
        key = flipped[up]
        # equal keys: each hash with the later members of its run
        sk = keys[order]
        later = count[sk] - (pos - start[sk]) - 1
        a = np.concatenate([np.repeat(query, count[key]), np.repeat(order, later)])
        b = order[np.concatenate([_runs(start[key], count[key]), _runs(pos + 1, later)])]
        close = np.bitwise_count(h[a] ^ h[b]) <= max_bits
        a, b = a[close], b[close]
        found.append(np.minimum(a, b) * n + np.maximum(a, b))
    return _pairs(found, n)


def near_pairs_between(hashes_a: np.ndarray, hashes_b: np.ndarray, max_bits: int = NEAR_BITS) -> np.ndarray:
    """Every pair (i, j) with popcount(a[i] ^ b[j]) <= max_bits: int64 [P, 2], sorted. The bands of
    `near_pairs_within`, with the table on b and each key of a looked up with its one-bit flips."""
    a = np.asarray(hashes_a, dtype=np.uint64)
    b = np.asarray(hashes_b, dtype=np.uint64)
    if not len(a) or not len(b):
        return np.zeros((0, 2), np.int64)
    nb = len(b)
    found = []
    for lo, hi in _bands(max_bits):
        width = hi - lo
        order, count, start = _table(_band_keys(b, lo, hi), width)
        ka = _band_keys(a, lo, hi)
        key = np.concatenate([ka[:, None], ka[:, None] ^ (np.int64(1) << np.arange(width))], axis=1).ravel()
        ia = np.repeat(np.arange(len(a)).repeat(width + 1), count[key])
        jb = order[_runs(start[key], count[key])]
        close = np.bitwise_count(a[ia] ^ b[jb]) <= max_bits
        found.append(ia[close] * nb + jb[close])
    return _pairs(found, nb)


def _runs(first: np.ndarray, length: np.ndarray) -> np.ndarray:
    """first[k], first[k] + 1, ..., first[k] + length[k] - 1 for every k, concatenated."""
    total = int(length.sum())
    return np.repeat(first - (np.cumsum(length) - length), length) + np.arange(total)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique of a 1-D integer array (which imports numpy.ma on its first call, some 15 ms of
    a build's serial part)."""
    v = np.sort(np.asarray(values).ravel())
    return v[np.r_[True, v[1:] != v[:-1]]] if len(v) else v
