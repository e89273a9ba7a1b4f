"""How well the builder's near-duplicate summary stands in for doctor's, and what a cheaper one would lose.

    python benchmarks/bench_neardup_summary.py [--source utk-like|PATH] [--pictures 1000] [--texture 25] [--json]

The builder summarises each decoded picture from a bilinear reduction to 64 px and a 2x2 area
average (datakit.builder.neargroups.Summaries); doctor from an area average straight to 32 px
(datakit.neardup.small). Both then take the same 64-bit DCT hash and 8x8 thumbnail. For each
reduction (doctor's, the builder's, and nearest-exact sampling to 64 px, a cheaper one) this
prints, on the same pictures in the same run:
- agreement with doctor's summary, picture by picture (hash bits apart, standardized thumbnail
  distance);
- pairs over the whole folder (every file): doctor's near-duplicate pairs that the reduction, with
  the builder's margins, misses, and the pairs it adds;
- robustness: the share of copies (re-encoded at JPEG quality 60, brightened by 15, shrunk to 75%
  and back, blurred, shifted by a pixel) still found at doctor's thresholds, on the pictures as
  they are and with pixel-scale texture added (`--texture` sigma, 0 to skip), where point
  sampling aliases;
- cost: microseconds a picture for the reduction's per-picture step right after the picture's
  decode (doctor's whole reduction; for the two 64 px ones the step to 64 px, their area step
  running once per chunk of 32).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_build_utk import utk_like_source  # noqa: E402

from datakit.builder import neargroups  # noqa: E402
from datakit.builder.images import decode  # noqa: E402
from datakit.neardup import NEAR_BITS, NEAR_THUMB, near_pairs_within, small, standardized, summaries  # noqa: E402


def _builder(pixels: list[np.ndarray]) -> np.ndarray:
    """The builder's 32x32 pictures, through its own code (Summaries), chunk by chunk."""
    out = []
    for i in range(0, len(pixels), 32):
        batch = neargroups.Summaries(len(pixels[i:i + 32]))
        for p in pixels[i:i + 32]:
            batch.add(p)
        out.append(batch.smalls())
    return np.concatenate(out)


def _nearest(p: np.ndarray, mid: np.ndarray | None = None) -> np.ndarray:
    return small(cv2.resize(p, (64, 64), dst=mid, interpolation=cv2.INTER_NEAREST_EXACT))


def _nearest_step():
    """The per-picture step of nearest-exact sampling, batched like the builder's (its area step per chunk)."""
    mid = np.empty((64, 64, 3), np.uint8)
    return lambda p: cv2.resize(p, (64, 64), dst=mid, interpolation=cv2.INTER_NEAREST_EXACT)


COST_PICTURES = 300
REDUCTIONS = {  # name: (pictures -> (N, 32, 32, 3), a maker of the per-picture step whose cost is measured)
    "doctor: area to 32": (lambda ps: np.stack([small(p) for p in ps]), lambda: small),
    # the per-picture step of the builder is the bilinear one (its area step runs once per chunk)
    "builder: bilinear 64, area 32": (_builder, lambda: neargroups.Summaries(COST_PICTURES).add),
    "nearest-exact 64, area 32": (lambda ps: np.stack([_nearest(p) for p in ps]), _nearest_step),
}


def _jpeg(p: np.ndarray, q: int) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", p, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_UNCHANGED)


COPIES = {
    "jpeg q60": lambda p: _jpeg(p, 60),
    "bright+15": lambda p: np.clip(p.astype(np.int16) + 15, 0, 255).astype(np.uint8),
    "75% and back": lambda p: cv2.resize(cv2.resize(p, (p.shape[1] * 3 // 4, p.shape[0] * 3 // 4),
                                                    interpolation=cv2.INTER_AREA), p.shape[1::-1],
                                         interpolation=cv2.INTER_CUBIC),
    "blur 1 px": lambda p: cv2.GaussianBlur(p, (0, 0), 1.0),
    "shift 1 px": lambda p: cv2.copyMakeBorder(p[1:, 1:], 0, 1, 0, 1, cv2.BORDER_REPLICATE),
}


def _summ(smalls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hashes, thumbs = summaries(smalls)
    return hashes, standardized(list(thumbs))


def _distances(a, b) -> tuple[np.ndarray, np.ndarray]:
    return np.bitwise_count(a[0] ^ b[0]).astype(int), np.abs(a[1] - b[1]).mean(axis=1)


def _pairs(smalls: np.ndarray, bits: int, thumb: float) -> set[tuple[int, int]]:
    hashes, thumbs = _summ(smalls)
    p = near_pairs_within(hashes, bits)
    close = np.abs(thumbs[p[:, 0]] - thumbs[p[:, 1]]).mean(axis=1) <= thumb
    return set(map(tuple, p[close].tolist()))


def _decoded(src: Path, names: list[str], size: int) -> tuple[list[np.ndarray], list[bytes]]:
    pixels, datas = [], []
    for n in names:
        try:
            data = (src / n).read_bytes()
            pixels.append(decode(data, size, 1 << 26)[0])
            datas.append(data)
        except Exception:  # unreadable or not a picture: the builders skip these too
            pass
    return pixels, datas


def _every_small(src: Path, names: list[str], size: int) -> dict[str, np.ndarray]:
    """Every file's 32x32 picture by each reduction, decoding 256 files at a time."""
    out = {name: [] for name in REDUCTIONS}
    for i in range(0, len(names), 256):
        pixels, _ = _decoded(src, names[i:i + 256], size)
        for name, (many, _) in REDUCTIONS.items():
            out[name].append(many(pixels))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def _cost_us(datas: list[bytes], make_step, size: int) -> float:
    """The step right after each picture's decode (its pixels in cache, as in the build)."""
    step, spent = make_step(), 0
    for data in datas:
        p = decode(data, size, 1 << 26)[0]
        t = time.perf_counter_ns()
        step(p)
        spent += time.perf_counter_ns() - t
    return spent / len(datas) / 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="utk-like", help="utk-like (made in a temporary folder) or a folder PATH")
    ap.add_argument("--pictures", type=int, default=1000, help="pictures for agreement, robustness and cost")
    ap.add_argument("--size", type=int, default=200, help="side the pictures are decoded to (build-utk's default)")
    ap.add_argument("--texture", type=float, default=25.0, help="sigma of the pixel-scale texture (0: skip)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dk-summ-") as tmp:
        src = utk_like_source(Path(tmp), 23708, 0) if args.source == "utk-like" else Path(args.source)
        names = sorted(n for n in os.listdir(src) if (src / n).is_file())
        every = _every_small(src, names, args.size)
        step = max(1, len(names) // args.pictures)
        sample, datas = _decoded(src, names[::step][:args.pictures], args.size)
    doctor = "doctor: area to 32"
    result = {"source": str(src), "files_decoded": len(every[doctor]), "pictures": len(sample), "size": args.size,
              "margins": [neargroups.BITS_MARGIN, neargroups.THUMB_MARGIN], "reductions": {}}
    ref = _summ(REDUCTIONS[doctor][0](sample))
    ref_pairs = _pairs(every[doctor], NEAR_BITS, NEAR_THUMB)
    result["doctor_pairs"] = len(ref_pairs)
    rng = np.random.default_rng(0)
    textured = [np.clip(p + rng.normal(0, args.texture, p.shape), 0, 255).astype(np.uint8) for p in sample] \
        if args.texture else []
    for name, (many, one) in REDUCTIONS.items():
        bits, thumb = _distances(_summ(many(sample)), ref)
        got = _pairs(every[name], neargroups.MAX_BITS, neargroups.MAX_THUMB)
        found = {}
        for kind, pics in (("as is", sample), (f"texture {args.texture:g}", textured)):
            if not pics:
                continue
            base = _summ(many(pics))
            for copy, make in COPIES.items():
                b, t = _distances(base, _summ(many([make(p) for p in pics])))
                found[f"{kind}: {copy}"] = round(float(((b <= NEAR_BITS) & (t <= NEAR_THUMB)).mean()), 3)
        result["reductions"][name] = {
            "bits_mean": round(float(bits.mean()), 2), "bits_p99": float(np.percentile(bits, 99)), "bits_max": int(bits.max()),
            "thumb_mean": round(float(thumb.mean()), 4), "thumb_max": round(float(thumb.max()), 4),
            "pairs_missed": len(ref_pairs - got), "pairs_added": len(got - ref_pairs), "copies_found": found,
            "cost_us": round(min(_cost_us(datas[:COST_PICTURES], one, args.size) for _ in range(3)), 1)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{src}: {result['files_decoded']} files decoded at {args.size} px; {result['pictures']} pictures for "
          f"agreement, copies and cost; doctor finds {len(ref_pairs)} near-duplicate pairs over every file")
    for name, r in result["reductions"].items():
        print(f"  {name}: {r['cost_us']:.1f} us a picture after its decode")
        print(f"    against doctor's summary: hash {r['bits_mean']:.2f} bits apart on average, {r['bits_p99']:.0f} at the "
              f"99th percentile, {r['bits_max']} at most; thumbnail {r['thumb_mean']:.3f} on average, {r['thumb_max']:.3f} at most")
        print(f"    pairs with the builder's margins (+{result['margins'][0]} bits, +{result['margins'][1]}): "
              f"{r['pairs_missed']} of doctor's missed, {r['pairs_added']} added")
        print("    copies found: " + "; ".join(f"{k} {v:.3f}" for k, v in r["copies_found"].items()))


if __name__ == "__main__":
    main()
