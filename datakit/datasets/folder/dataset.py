"""`FolderBuild`: the output of `datakit build` over any labelled folder.

Besides the generic build rules (the stored label fields name the item's class), a build whose
labels came from a file-name pattern re-reads them from each item's file name.
"""

from __future__ import annotations

from datakit.datasets.base import Item
from datakit.datasets.built import BuildDataset
from datakit.datasets.registry import register


class FolderBuild(BuildDataset):
    key = "folder"

    def __init__(self, root, manifest: dict):
        super().__init__(root, manifest)
        options = manifest.get("options", {})
        self._pattern = None
        if options.get("labels") == "pattern" and options.get("pattern"):
            from datakit.datasets.folder.sources import NamePattern

            self._pattern = NamePattern(options["pattern"])

    def label_problems(self, item: Item) -> list[str]:
        problems = []
        if self._pattern is not None:
            try:
                fields = self._pattern.parse(item.filename)
                key = [fields[f] for f in self.class_by]
                if key in self.class_keys and self.class_keys.index(key) != item.label:
                    problems.append(f"labelled {self.classes[item.label]} but the file name says "
                                    f"{self.classes[self.class_keys.index(key)]}")
            except ValueError as exc:
                problems.append(f"file name carries no labels ({exc})")
        return problems + super().label_problems(item)


register("folder", FolderBuild)
