"""Model archives are hostile until checked: the sizes a zip declares are checked before reading.

A zip's central directory declares each member's compressed and uncompressed size; Python's
``zipfile`` never returns more bytes than declared (and refuses a member whose CRC does not match),
so checking the declared sizes bounds what extracting or reading the archive can allocate. The
limits are far above real models: Auto3DSeg checkpoints are 10-300 MB of float weights, which
compress by about 1.1×; the body part regression model is a folder of four files.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import psutil

from mhub_cpu.core.errors import ModelError

#: Members of a model archive (real ones have 2 to 10).
MAX_MEMBERS = 256
#: Uncompressed bytes of all members together.
MAX_TOTAL_BYTES = 8 << 30
#: Uncompressed / compressed size of a member above :data:`RATIO_FLOOR` bytes (weights: about 1.1;
#: a zip bomb of zeros: about 1000).
MAX_RATIO = 50
RATIO_FLOOR = 1 << 20


def _size(count: int) -> str:
    return f"{count / (1 << 30):.1f} GiB" if count >= 1 << 30 else f"{count / (1 << 20):.1f} MiB"


def check_archive(archive: zipfile.ZipFile, path: Path, memory_bytes: int | None = None) -> None:
    """Refuse an archive whose declared sizes exceed the limits, before any member is read.

    Args:
        archive: The open zip.
        path: Its path, for the message.
        memory_bytes: The memory a member may take when read whole; default: half the memory
            available now.

    Raises:
        ModelError: naming the member, the size it declares and the limit.
    """
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise ModelError(f"model archive {path} has {len(members)} members, more than the {MAX_MEMBERS} a model may have")
    total = sum(member.file_size for member in members)
    if total > MAX_TOTAL_BYTES:
        raise ModelError(f"model archive {path} declares {_size(total)} uncompressed, more than the limit of {_size(MAX_TOTAL_BYTES)}")
    limit = memory_bytes if memory_bytes is not None else psutil.virtual_memory().available // 2
    for member in members:
        if member.file_size > limit:
            raise ModelError(f"model archive {path}: {member.filename} declares {_size(member.file_size)} uncompressed, "
                             f"more than the {_size(limit)} of memory it may take")
        if member.file_size > RATIO_FLOOR and member.file_size > MAX_RATIO * max(member.compress_size, 1):
            raise ModelError(f"model archive {path}: {member.filename} declares {_size(member.file_size)} from "
                             f"{_size(member.compress_size)} compressed (ratio {member.file_size / max(member.compress_size, 1):.0f}, "
                             f"the limit is {MAX_RATIO}): a zip bomb, not a model")
