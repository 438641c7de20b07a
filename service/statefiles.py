"""Files the service keeps for itself in its state directory (keys, caches): written whole, by one
process, readable by this user only."""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def create_once(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` (mode 0600) unless the file exists. Every process starting at
    the same moment ends up with the same file: each writes a private temporary file and links
    it into place, which fails for all but the first. True when this call made it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False  # another process was first: its file stands
    finally:
        tmp.unlink()
    return True
