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

from collections import defaultdict

import cv2
import numpy as np

NEAR_BITS = 6
NEAR_THUMB = 0.08


def small(pixels: np.ndarray) -> np.ndarray:
    """The 32x32 area-averaged picture both summaries are computed from."""
    return cv2.resize(np.ascontiguousarray(pixels), (32, 32), interpolation=cv2.INTER_AREA)


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
    """For each i in a, the indices j in b with popcount(a[i] ^ b[j]) <= max_bits.

    Multi-index hashing: the 64 bits are cut into max_bits + 1 bands; two hashes within max_bits
    differ in at most max_bits bands, so they agree exactly on at least one band. Candidates come
    from sorted band keys (binary search), then the full distance is checked: O((N + M) log M)
    plus the true candidates, instead of N x M comparisons.
    """
    a = np.asarray(hashes_a, dtype=np.uint64)
    b = np.asarray(hashes_b, dtype=np.uint64)
    if not len(a) or not len(b):
        return []
    bands = max_bits + 1
    edges = np.linspace(0, 64, bands + 1).astype(int)
    found: dict[int, set] = defaultdict(set)
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = np.uint64((1 << int(hi - lo)) - 1)
        ka = (a >> np.uint64(lo)) & mask
        kb = (b >> np.uint64(lo)) & mask
        order = np.argsort(kb, kind="stable")
        sorted_kb = kb[order]
        left = np.searchsorted(sorted_kb, ka, "left")
        right = np.searchsorted(sorted_kb, ka, "right")
        for i in np.nonzero(right > left)[0]:
            cand = order[left[i]:right[i]]
            dist = np.bitwise_count(b[cand] ^ a[i])
            hit = cand[dist <= max_bits]
            if len(hit):
                found[int(i)].update(hit.tolist())
    return [(i, np.array(sorted(js))) for i, js in sorted(found.items())]


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


_DCT8_T = np.ascontiguousarray(_dct_rows().T)


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
    # D @ g @ D.T for every picture as two tall products (OpenCV's gemm: the worker processes'
    # OpenBLAS threads would spin on cores that the other workers need)
    rows = cv2.gemm(gray.reshape(n * 32, 32), _DCT8_T, 1, None, 0).reshape(n, 32, 8)
    cols = np.ascontiguousarray(rows.transpose(0, 2, 1)).reshape(n * 8, 32)
    dct = cv2.gemm(cols, _DCT8_T, 1, None, 0).reshape(n, 8, 8).transpose(0, 2, 1).reshape(n, 64)
    median = np.partition(dct[:, 1:], 31, axis=1)[:, 31:32]
    hashes = np.packbits(dct > median, axis=1).view(">u8").ravel().astype(np.uint64)
    thumbs = cv2.resize(tall, (8, n * 8), interpolation=cv2.INTER_AREA).reshape(n, 8, 8, 3)
    return hashes, thumbs


def near_pairs_within(hashes: np.ndarray, max_bits: int = NEAR_BITS) -> np.ndarray:
    """Every pair (i, j), i < j, of `hashes` at most max_bits apart: int64 [P, 2], sorted.

    The same bands as `near_pairs`, joined on themselves: sorted by a band's key, the hashes that
    share it form a run, and every pair inside every run is generated and checked at once (numpy
    index arithmetic, no Python loop per run or per picture)."""
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    if n < 2:
        return np.zeros((0, 2), np.int64)
    edges = np.linspace(0, 64, max_bits + 2).astype(int)
    found = []
    pos = np.arange(n)
    for lo, hi in zip(edges[:-1], edges[1:]):
        keys = (h >> np.uint64(lo)) & np.uint64((1 << int(hi - lo)) - 1)
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        ends = np.r_[starts[1:], n]
        end_of = np.repeat(ends, ends - starts)  # for each sorted position, the end of its run
        later = end_of - pos - 1  # partners after it in its run
        total = int(later.sum())
        if total == 0:
            continue
        for lo_p in range(0, n, 4096):  # bounded memory: pairs generated a block of positions at a time
            c = later[lo_p:lo_p + 4096]
            m = int(c.sum())
            if m == 0:
                continue
            first = np.repeat(pos[lo_p:lo_p + 4096], c)
            step = np.arange(m) - np.repeat(np.cumsum(c) - c, c)
            second = first + 1 + step
            a, b = order[first], order[second]
            close = np.bitwise_count(h[a] ^ h[b]) <= max_bits
            a, b = a[close], b[close]
            found.append(np.minimum(a, b) * n + np.maximum(a, b))
    if not found:
        return np.zeros((0, 2), np.int64)
    flat = np.unique(np.concatenate(found)).astype(np.int64)
    return np.stack([flat // n, flat % n], axis=1)
