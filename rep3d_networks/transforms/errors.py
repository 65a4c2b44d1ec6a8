"""The error raised for an unusable input volume, and how to find it in a chain of wrapped exceptions."""

import re
from typing import Optional


class VolumeError(ValueError):
    """An input image or label that cannot be used, with the file and the problem in the message.

    The message reads ``"<file>: <problem>"``; the ``path`` and ``problem`` attributes hold the two parts.
    MONAI wraps errors raised inside transforms (``RuntimeError: applying transform ...``) and ``monai.bundle``
    wraps config errors; :func:`find_volume_error` digs the original out of such a chain.

    Args:
        path: the file (or files, as text) at fault.
        problem: what is wrong and what to do about it.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem

    def __reduce__(self):  # picklable across DataLoader worker processes
        return type(self), (self.path, self.problem)


def find_volume_error(error: Optional[BaseException]) -> Optional[VolumeError]:
    """The first :class:`VolumeError` in ``error``'s ``__cause__`` / ``__context__`` chain, or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, VolumeError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def volume_error_message(error: Optional[BaseException]) -> Optional[str]:
    """The ``"<file>: <problem>"`` text of a :class:`VolumeError` behind ``error``, or None.

    Besides the exception chain this reads the text of errors re-raised from ``DataLoader`` worker processes,
    which carry the original only as a formatted traceback (``... VolumeError: <file>: <problem>``).
    """
    found = find_volume_error(error)
    if found is not None:
        return str(found)
    seen = set()
    while error is not None and id(error) not in seen:
        match = re.search(r"VolumeError: (.+)", str(error))
        if match:
            return match.group(1).strip()
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
