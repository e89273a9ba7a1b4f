"""The confusion matrix of a trained model on its held-out split, per-class accuracy, and the matrix
as a PNG: a model that is good on average can be poor on one class (race x gender: one race's
women taken for its men), and only the matrix shows it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datakit.errors import DatakitError


def confusion_matrix(model, dataset, num_classes: int) -> np.ndarray:
    """counts[true, predicted] over every batch of `dataset` (images, labels)."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def predict(images):
        return tf.argmax(model(images, training=False), axis=-1, output_type=tf.int32)

    counts = np.zeros((num_classes, num_classes), np.int64)
    for images, labels in dataset:
        np.add.at(counts, (np.asarray(labels, np.int64), predict(images).numpy()), 1)
    if not counts.sum():
        raise DatakitError("evaluation data set is empty")
    return counts


def per_class_accuracy(counts: np.ndarray, classes) -> dict:
    """{class name: recall} (the diagonal over each row); None for a class with no example."""
    rows = counts.sum(axis=1)
    return {str(c): (round(float(counts[i, i] / rows[i]), 6) if rows[i] else None) for i, c in enumerate(classes)}


def report(counts: np.ndarray, classes) -> dict:
    """What metrics.json and --json hold: the counts (rows true, columns predicted) and per-class accuracy."""
    return {"classes": [str(c) for c in classes], "rows": "true", "columns": "predicted",
            "counts": counts.tolist(), "accuracy": round(float(np.trace(counts) / counts.sum()), 6),
            "per_class_accuracy": per_class_accuracy(counts, classes)}


def _font_scale(cv2, texts, width: int, base: float = 0.45) -> float:
    widest = max((cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, base, 1)[0][0] for t in texts), default=1)
    return base * min(1.0, width / max(widest, 1))


def write_png(counts: np.ndarray, classes, path, title: str = "") -> Path:
    """Draw the matrix (cells shaded by the row fraction, each with its count and percent of the row;
    per-class accuracy at the right) and write it atomically to `path`."""
    import cv2

    from datakit.atomic import write_bytes

    k = len(classes)
    names = [str(c) for c in classes]
    cell = 64 if k <= 12 else max(18, 768 // k)
    label_w = max(90, min(220, 8 * max(len(n) for n in names) + 10))
    top, right, bottom = 40, 80, label_w
    w, h = label_w + k * cell + right, top + k * cell + bottom
    img = np.full((h, w, 3), 255, np.uint8)
    rows = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    frac = counts / rows
    font, black = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0)
    scale = _font_scale(cv2, [f"{counts.max()}", "100%"], cell - 6, 0.45)
    for i in range(k):
        for j in range(k):
            x0, y0 = label_w + j * cell, top + i * cell
            shade = int(255 - 200 * frac[i, j])
            colour = (255, shade, shade) if i != j else (shade, 255, shade)  # BGR: blue off-diagonal, green diagonal
            cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1), colour, -1)
            cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1), (200, 200, 200), 1)
            if cell >= 32:
                cv2.putText(img, str(int(counts[i, j])), (x0 + 4, y0 + cell // 2 - 2), font, scale, black, 1, cv2.LINE_AA)
                cv2.putText(img, f"{frac[i, j]:.0%}", (x0 + 4, y0 + cell // 2 + 16), font, scale * 0.8, black, 1,
                            cv2.LINE_AA)
    name_scale = _font_scale(cv2, names, label_w - 8)
    for i, name in enumerate(names):
        cv2.putText(img, name, (4, top + i * cell + cell // 2 + 4), font, name_scale, black, 1, cv2.LINE_AA)
        acc = counts[i, i] / rows[i, 0]
        cv2.putText(img, f"{acc:.0%}", (label_w + k * cell + 8, top + i * cell + cell // 2 + 4), font, 0.45, black, 1,
                    cv2.LINE_AA)
    # Predicted names under the columns, reading downwards: written sideways, then turned a quarter clockwise.
    columns = np.full((k * cell, label_w, 3), 255, np.uint8)
    for j, name in enumerate(names):
        cv2.putText(columns, name, (4, (k - 1 - j) * cell + cell // 2 + 4), font, name_scale, black, 1, cv2.LINE_AA)
    img[top + k * cell:, label_w:label_w + k * cell] = np.rot90(columns, -1)
    total = counts.sum()
    head = f"{title}  accuracy {np.trace(counts) / total:.1%} of {total}  (rows: true, columns: predicted)".strip()
    cv2.putText(img, head, (4, 24), font, _font_scale(cv2, [head], w - 8, 0.5), black, 1, cv2.LINE_AA)
    cv2.putText(img, "recall", (label_w + k * cell + 8, top - 6), font, 0.4, black, 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise DatakitError(f"{path}: could not encode the confusion matrix PNG")
    path = Path(path)
    write_bytes(path, png.tobytes())
    return path
