"""Files written whole or not at all: the one atomic write every dprl module uses, and the one
reader of the JSON records it writes."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO, Callable, Union

Content = Union[str, bytes, Callable[[BinaryIO], object]]


def atomic_write(path: str | os.PathLike, content: Content) -> Path:
    """Write ``path`` through a temporary file beside it, fsynced, then renamed over ``path``.

    A kill at any moment leaves the previous file or the new one, never a half-written one (the
    temporary ``.tmp-<name>-<pid>`` is removed if the write fails). ``content`` is text (UTF-8),
    bytes, or a function that writes to the open binary file, e.g. ``lambda f: np.savez(f, **a)``.
    Returns ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_record(path: str | os.PathLike) -> tuple[dict | None, str | None]:
    """``(record, None)`` for a readable JSON object file, ``(None, why)`` otherwise (missing,
    empty, half-written: a run that did not write it whole)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"no {path.name}"
    except (OSError, ValueError) as e:
        return None, f"{path.name} is unreadable ({type(e).__name__}: {e})"
    if not isinstance(record, dict):
        return None, f"{path.name} is unreadable (not a JSON object)"
    return record, None
