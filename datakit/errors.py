"""One exception type for every failure a user can act on.

The CLI prints its message as a single line and exits non-zero; the message must name the file (or
parameter) and the reason. A message about an argument names the Python parameter (`per_class=3`)
and carries it (or several) in `param`, so the command-line layer can say `--per-class 3` instead.
"""

from __future__ import annotations


class DatakitError(Exception):
    """A user-facing error: bad input, failed download, short class, refused output folder."""

    def __init__(self, message: str, param: str | tuple[str, ...] | None = None):
        super().__init__(message)
        self.param = param
