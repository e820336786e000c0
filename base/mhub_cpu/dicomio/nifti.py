"""Reading NIfTI volumes: gzip through ISA-L where installed, and the stored (unscaled) array.

A 512x512x600 int16 ``.nii.gz`` takes about 1.9 s to decompress with zlib and 0.75 s with ISA-L
(``isal`` package, same bytes) on the 2-core benchmark machine; for body part regression that is
a third of the whole run. ``load_nifti`` registers an ISA-L reader for ``.gz`` with nibabel's
``ImageOpener`` (its documented extension point; writing still uses nibabel's own gzip) and then
calls ``nibabel.load``. Without ``isal`` it is plain ``nibabel.load``.
"""

from __future__ import annotations

import io
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
from nibabel.openers import ImageOpener, gzip_open

from mhub_cpu.core.errors import InputError

try:
    from isal import igzip
except ImportError:  # optional: nibabel's zlib reader
    igzip = None  # type: ignore[assignment]


def _open_gzip(filename: str, mode: str = "rb", compresslevel: int = 9, mtime: int = 0, keep_open: bool = False) -> io.IOBase:
    if mode == "rb" and igzip is not None:
        return igzip.IGzipFile(filename, mode)
    return gzip_open(filename, mode, compresslevel, mtime, keep_open)  # type: ignore[arg-type]


def load_nifti(path: Path | str) -> nib.Nifti1Image:
    """``nibabel.load`` with ISA-L decompression of ``.nii.gz`` where available."""
    opener, arguments = ImageOpener.compress_ext_map[".gz"]
    if opener is not _open_gzip:
        ImageOpener.compress_ext_map[".gz"] = (_open_gzip, arguments)
    image = nib.load(str(path))
    if not isinstance(image, nib.Nifti1Image):  # includes NIfTI-2 (a subclass)
        raise InputError(f"{path} is not a NIfTI image")
    return image


#: Bytes read from a ``.nii.gz`` at a time: the voxel buffer grows with the data really there, so a
#: header that claims gigabytes over a short payload costs only the payload.
CHUNK_BYTES = 64 << 20


def input_limit_bytes(max_memory_mb: float | None = None) -> int:
    """The largest voxel array an input may declare: a quarter of the memory available now, and of
    ``--max-memory`` where given (the pipeline holds a float copy and the model grid beside it)."""
    limit = psutil.virtual_memory().available // 4
    return min(limit, int(max_memory_mb * (1 << 20)) // 4) if max_memory_mb else limit


def limit_source(max_memory_mb: float | None) -> str:
    """Where :func:`input_limit_bytes` came from, for messages."""
    return f"a quarter of --max-memory {max_memory_mb:.0f} MiB" if max_memory_mb else "a quarter of the memory available here"


def unscaled_array(image: nib.Nifti1Image, max_memory_mb: float | None = None) -> tuple[np.ndarray, float, float]:
    """The stored voxel array in its on-disk type, with the header's slope and intercept.

    The size the header declares is checked before anything is allocated. Uncompressed files are
    memory-mapped, so slicing reads only what is used; a ``.nii.gz`` is decompressed once, in its
    stored type (e.g. int16), in chunks, never as a scaled float64 copy.

    Raises:
        InputError: the header declares more than :func:`input_limit_bytes`, or the file holds
            fewer voxel bytes than its header declares.
    """
    proxy = image.dataobj
    path = Path(image.get_filename() or "")
    dtype = image.header.get_data_dtype()
    declared = int(np.prod(image.shape, dtype=np.int64)) * dtype.itemsize
    limit = input_limit_bytes(max_memory_mb)
    if declared > limit:
        shape = "x".join(str(n) for n in image.shape)
        raise InputError(f"{path.name}: its header declares {shape} voxels of {dtype.name} ({declared / (1 << 20):.0f} MiB), "
                         f"more than the {limit / (1 << 20):.0f} MiB an input may hold ({limit_source(max_memory_mb)})")
    offset = int(getattr(proxy, "offset", 0))
    if path.suffix == ".gz":
        return _read_gzip_voxels(path, offset, declared, dtype, image.shape), float(proxy.slope), float(proxy.inter)  # type: ignore[attr-defined]
    if path.is_file() and path.stat().st_size < offset + declared:
        raise InputError(f"{path.name} holds {max(path.stat().st_size - offset, 0)} bytes of voxel data; its header declares {declared}")
    if hasattr(proxy, "get_unscaled"):
        return np.asanyarray(proxy.get_unscaled()), float(proxy.slope), float(proxy.inter)  # type: ignore[attr-defined]
    return np.asanyarray(proxy), 1.0, 0.0


def _read_gzip_voxels(path: Path, offset: int, declared: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Decompress the voxel bytes of a ``.nii.gz`` in chunks, refusing a payload shorter than declared."""
    buffer = bytearray()
    try:
        with _open_gzip(str(path)) as stream:
            stream.read(offset)
            while len(buffer) < declared:
                chunk = stream.read(min(CHUNK_BYTES, declared - len(buffer)))
                if not chunk:
                    break
                buffer += chunk
    except (OSError, EOFError, ValueError) as exc:
        raise InputError(f"{path.name} cannot be decompressed: {exc}") from exc
    if len(buffer) < declared:
        raise InputError(f"{path.name} holds {len(buffer)} bytes of voxel data; its header declares {declared}")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F")
