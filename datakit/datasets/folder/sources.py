"""Where the labels of an arbitrary picture folder come from: class folders, a file-name pattern, or
a CSV (FairFace-style). Each is a label source of the generic builder: `.fields`, `.declared`
(allowed values known up front) and `.list(src)`, which names every candidate without reading it.

Every source applies datakit.builder.scan's one policy for hostile entries: symbolic links are
followed only to a regular file inside SRC (never to a folder), FIFOs, sockets and devices are
ignored and never opened, and a picture whose path is not valid UTF-8 or holds a control character
is skipped, each with the reason.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from datakit.builder.classes import Field, check_class_name, parse_allowed
from datakit.builder.scan import Listing, inspect, list_flat, shown
from datakit.errors import DatakitError

PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_ASCII_INT = re.compile(r"[0-9]+")


def is_picture_name(name: str) -> bool:
    low = name.lower()
    return not low.startswith(".") and low.endswith(PICTURE_SUFFIXES)


def _flat(rel: str) -> str:
    """A path under SRC as one file name (for the class folders): 'a/b.jpg' -> 'a__b.jpg'."""
    return rel.replace("/", "__")


def _walk(root: Path, prefix: str, found: Listing, top: str):
    """Every regular file under `root` (sorted; symbolic links followed only to a regular file
    inside `top`, SRC, and never to a folder), as paths relative to SRC; other entries, and folders
    that hold nothing, are reported as ignored."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        found.ignore(prefix.rstrip("/") or ".", f"cannot list: {exc.strerror or exc}")
        return
    for entry in entries:
        rel = prefix + entry.name
        kind, why = inspect(entry, top)
        if kind == "dir":
            before = len(found.ignored)
            inner = list(_walk(Path(entry.path), rel + "/", found, top))
            if not inner and len(found.ignored) == before:
                found.ignore(rel, "empty folder")
            yield from inner
        elif why:
            found.ignore(rel, why)
        elif not is_picture_name(entry.name):
            found.ignore(rel, f"not a picture name ({', '.join(PICTURE_SUFFIXES)})")
        else:
            yield rel


class ClassFolders:
    """SRC/<class>/<picture> (any depth below the class folder), what
    keras.utils.image_dataset_from_directory reads: the one field "class" is the folder's name."""

    fields = (Field("class", "str"),)
    declared: dict = {}

    def describe(self) -> dict:
        return {"labels": "folders"}

    def list(self, src: Path) -> Listing:
        found = Listing()
        for entry in sorted(os.scandir(src), key=lambda e: e.name):
            kind, why = inspect(entry, str(src))
            if kind != "dir":
                found.ignore(entry.name, f"{why}: not a class folder" if why else
                             "not a class folder (SRC holds one folder per class)")
                continue
            why = check_class_name(entry.name)
            if why:
                found.ignore(entry.name, f"folder name is not a valid class name ({why})")
                continue
            files = list(_walk(Path(entry.path), entry.name + "/", found, str(src)))
            if not files:
                found.ignore(entry.name, "empty class folder (no pictures): not a class")
                continue
            labels = {"class": entry.name}
            for rel in files:
                found.offer(rel, lambda _: labels, _flat(rel.split("/", 1)[1]))
        return found


_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*))?\}")


class NamePattern:
    """Named fields parsed from each file name of a flat SRC: `{age:int}_{gender:0..1}_{race:0..4}_*`.

    `{f}` or `{f:str}` is any text, `{f:int}` ASCII digits, `{f:LO..HI}` digits in that range,
    `{f:a,b,c}` one of the listed values; `*` is any text. The whole name must match; a picture
    name that does not, or whose value is not allowed, is skipped with the reason."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        parts, fields, declared, pos = [], [], {}, 0
        for m in _FIELD.finditer(pattern):
            parts.append(self._literal(pattern[pos:m.start()]))
            name, spec = m.group(1), (m.group(2) or "str").strip()
            if name in [f.name for f in fields]:
                raise DatakitError(f"pattern: field {name!r} appears twice in {pattern!r}", param="pattern")
            if spec == "str":
                fields.append(Field(name, "str"))
                parts.append(f"(?P<{name}>.+?)")
            elif spec == "int":
                fields.append(Field(name, "int"))
                parts.append(f"(?P<{name}>[0-9]+)")
            else:
                allowed = parse_allowed(spec, f"pattern field {name!r}", param="pattern")
                ints = not allowed.values or all(isinstance(v, int) for v in allowed.values)
                fields.append(Field(name, "int" if ints else "str"))
                declared[name] = allowed
                parts.append(f"(?P<{name}>[0-9]+)" if ints else f"(?P<{name}>.+?)")
            pos = m.end()
        parts.append(self._literal(pattern[pos:]))
        if not fields:
            raise DatakitError(f"pattern: {pattern!r} names no field (write fields as {{name:int}})", param="pattern")
        self.fields, self.declared = tuple(fields), declared
        self._re = re.compile("".join(parts), re.DOTALL)

    @staticmethod
    def _literal(text: str) -> str:
        if "{" in text or "}" in text:
            raise DatakitError(f"pattern: stray brace in {text!r} (fields are {{name}}, {{name:int}}, "
                               "{name:LO..HI} or {name:a,b})", param="pattern")
        return ".*".join(re.escape(piece) for piece in text.split("*"))

    def describe(self) -> dict:
        return {"labels": "pattern", "pattern": self.pattern}

    def parse(self, name: str) -> dict:
        """The fields of one name; raises ValueError with the reason."""
        m = self._re.fullmatch(name)
        if not m:
            raise ValueError(f"does not match the pattern {self.pattern!r}")
        out = {}
        for f in self.fields:
            text = m.group(f.name)
            value = int(text) if f.kind == "int" else text
            allowed = self.declared.get(f.name)
            if allowed is not None and value not in allowed:
                raise ValueError(f"{f.name} {value} outside {allowed.describe()}")
            out[f.name] = value
        return out

    def list(self, src: Path) -> Listing:
        return list_flat(src, is_picture_name, ", ".join(PICTURE_SUFFIXES), self.parse)


class CsvLabels:
    """A CSV with a header row: one column names each picture (a path under SRC), others hold its
    labels (FairFace: file,age,gender,race). A column whose every value is ASCII digits is an integer
    field. Rows naming a missing file, or no file, and files no row names are reported."""

    def __init__(self, csv_path, file_column: str, label_columns):
        self.path = Path(csv_path)
        self.file_column = file_column
        self.label_columns = tuple(label_columns)
        if not self.label_columns:
            raise DatakitError("label_columns: at least one column is needed", param="label_columns")
        try:
            with open(self.path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                header = reader.fieldnames or []
                self.rows = [(i + 2, row) for i, row in enumerate(reader)]
        except FileNotFoundError:
            raise DatakitError(f"{self.path}: no such CSV file", param="csv") from None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DatakitError(f"{self.path}: unreadable CSV ({exc})", param="csv") from None
        for col, param in [(file_column, "file_column"), *[(c, "label_columns") for c in self.label_columns]]:
            if col not in header:
                raise DatakitError(f"{self.path}: {param} {col!r} is not a column (columns: {', '.join(header)})",
                                   param=param)
        ints = {c: all(_ASCII_INT.fullmatch((row.get(c) or "").strip()) for _, row in self.rows)
                for c in self.label_columns}
        self.fields = tuple(Field(c, "int" if ints[c] and self.rows else "str") for c in self.label_columns)
        self.declared: dict = {}

    def describe(self) -> dict:
        return {"labels": "csv", "csv": str(self.path), "file_column": self.file_column,
                "label_columns": list(self.label_columns)}

    def list(self, src: Path) -> Listing:
        found = Listing()
        kinds = {f.name: f.kind for f in self.fields}
        seen: dict[str, dict] = {}
        conflicts: set[str] = set()
        where = self.path.name
        for line, row in self.rows:
            raw = (row.get(self.file_column) or "").strip()
            if not raw:
                found.skip(f"{where}:{line}", f"row {line} names no file")
                continue
            rel = raw.replace("\\", "/")
            parts = [p for p in rel.split("/") if p not in ("", ".")]
            if rel.startswith("/") or ".." in parts:
                found.skip(raw, f"row {line}: path outside SRC")
                continue
            rel = "/".join(parts)
            labels, bad = {}, None
            for c in self.label_columns:
                text = (row.get(c) or "").strip()
                if text == "":
                    bad = f"row {line}: empty {c}"
                    break
                labels[c] = int(text) if kinds[c] == "int" else text
            if bad:
                found.skip(rel, bad)
                continue
            if rel in seen:
                if seen[rel] != labels:
                    conflicts.add(rel)
                continue
            seen[rel] = labels
        stray = Listing()  # what the walk ignores: reported below unless the CSV names it
        present = set(_walk(src, "", stray, str(src)))
        why_not = {e["file"]: e["reason"] for e in stray.ignored}
        for rel in sorted(conflicts):
            found.skip(rel, f"named in {where} more than once with other labels")
        for rel, labels in sorted(seen.items()):
            if rel in conflicts:
                continue
            if rel not in present:
                reason = why_not.get(shown(rel)) or ("not a regular picture file" if (src / rel).exists() else "missing")
                found.skip(rel, f"named in {where} but {reason}")
                continue
            found.offer(rel, lambda _: labels, _flat(rel))
        named = {shown(rel) for rel in seen}
        for entry in stray.ignored:
            if entry["file"] not in named:
                found.ignored.append(entry)
        for rel in sorted(present - set(seen)):
            found.ignore(rel, f"not named in {where}")
        return found
