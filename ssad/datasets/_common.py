"""Helpers shared by the dataset readers: paths, messages and argument checks."""

from __future__ import annotations

import numbers
import os
from pathlib import Path

from ssad._images import check_image_size

__all__ = ["check_image_size"]  # re-exported for the readers

PathLike = str | os.PathLike[str]


def as_path(root: PathLike, *, func: str) -> Path:
    """Return ``root`` as a :class:`~pathlib.Path`, with sklearn's wording on bad types."""
    if not isinstance(root, str | os.PathLike):
        raise TypeError(
            f"The 'root' parameter of {func} must be a str or an os.PathLike. "
            f"Got {root!r} of type {type(root).__name__} instead."
        )
    return Path(root).expanduser()


def missing_file_error(
    path: Path, *, what: str, hint: str, alternative: Path | None = None
) -> FileNotFoundError:
    """Build the error raised when an expected file or folder is absent.

    The message names the exact path that was looked for (and an accepted
    ``alternative``), what it should hold and where such data can be obtained (``hint``).
    """
    also = f" or '{alternative}'" if alternative is not None else ""
    return FileNotFoundError(f"{what} not found: expected '{path}'{also}. {hint}")


def missing_root_error(root: Path, *, name: str, expected: Path, hint: str) -> OSError:
    """Build the error raised when ``root`` is not a folder.

    A :class:`FileNotFoundError` when it does not exist, a
    :class:`NotADirectoryError` when it is a file (an archive not yet extracted,
    or one of the files of the data set instead of their folder).
    """
    if root.exists():
        if root.name.endswith((".tar.gz", ".tgz", ".tar", ".zip")):
            advice = "It looks like an archive: extract it and pass the extracted folder."
        else:
            advice = f"Pass the folder that holds the files, e.g. '{root.parent}'."
        return NotADirectoryError(
            f"{name} folder expected, but '{root}' is a file, not a folder; the file "
            f"'{expected}' is looked for inside the folder. {advice} {hint}"
        )
    return FileNotFoundError(
        f"{name} folder not found: '{root}' does not exist, so the file '{expected}' "
        f"expected there is missing. {hint}"
    )


def check_int(value: object, name: str, *, func: str, low: int) -> int:
    """Validate an integer argument ``>= low`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
        raise ValueError(
            f"The '{name}' parameter of {func} must be an int in the range [{low}, inf). "
            f"Got {value!r} instead."
        )
    return int(value)
