"""`UTKBuild`: a build-utk output as a `datakit.datasets.Dataset`, with UTKFace's own label rule.

Besides the generic build rules (class text and race/gender fields name the class), a UTKFace
file name carries the labels itself: label = race_index * 2 + gender, with race_index the
position of the name's race among the build's races.
"""

from __future__ import annotations

from datakit.datasets.base import Item
from datakit.datasets.built import BuildDataset
from datakit.datasets.registry import register
from datakit.datasets.utk.names import NameError_, label_of, parse_name

UTK_FIELDS = [{"name": "age", "kind": "int"}, {"name": "gender", "kind": "int"}, {"name": "race", "kind": "int"}]
UTK_CLASS_BY = ["race", "gender"]


class UTKBuild(BuildDataset):
    key = "utk"
    default_fields = UTK_FIELDS
    default_class_by = UTK_CLASS_BY

    def __init__(self, root, manifest: dict):
        self.races = list(manifest.get("races", manifest.get("options", {}).get("races", [])))
        super().__init__(root, manifest)
        if not self.races:
            self.races = list(range(len(self.classes) // 2))
        self._name_labels: dict[str, int | str] = {}

    def default_class_keys(self) -> list[list[int]]:
        races = self.races or list(range(len(self.manifest["classes"]) // 2))
        return [[r, g] for r in races for g in (0, 1)]

    @property
    def label_rules(self) -> str:
        return ", matching file names" + super().label_rules.replace(", matching", ",", 1)

    def label_problems(self, item: Item) -> list[str]:
        problems = []
        from_name = self._label_from_name(item.filename)
        if isinstance(from_name, str):
            problems.append(f"file name carries no UTKFace labels ({from_name})")
        elif from_name != item.label:
            problems.append(f"labelled {self.classes[item.label]} but the file name says {self.classes[from_name]}")
        return problems + super().label_problems(item)

    def _label_from_name(self, filename: str) -> int | str:
        """The label the file name gives, or why it gives none (cached: every format holds the name)."""
        got = self._name_labels.get(filename)
        if got is None:
            try:
                lab = parse_name(filename)
                got = (label_of(lab, self.races) if lab.race in self.races
                       else f"race {lab.race} not among the build's races {self.races}")
            except NameError_ as exc:
                got = str(exc)
            self._name_labels[filename] = got
        return got


register("utk", UTKBuild)
