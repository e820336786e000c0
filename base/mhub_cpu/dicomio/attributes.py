"""Reading numeric DICOM attributes, with refusals that name the attribute, its tag and the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from mhub_cpu.core.errors import InputError


def numbers(
    dataset: Dataset, keyword: str, count: int, path: Path, consequence: str = "the slice cannot be placed in space",
) -> np.ndarray:
    """A multi-valued numeric attribute, or a refusal naming the attribute and the file."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    name = pydicom.datadict.dictionary_description(tag) if tag is not None else keyword
    where = f"({tag >> 16:04X},{tag & 0xFFFF:04X})" if tag is not None else ""
    try:
        value = dataset.get(keyword)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} {where} of {path.name} cannot be read: {exc}") from exc
    if value is None or value == "" or (hasattr(value, "__len__") and len(value) == 0):
        raise InputError(f"{name} {where} is missing or empty in {path.name}; {consequence}")
    try:
        numbers = np.asarray([float(v) for v in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value])])
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} {where} of {path.name} is not numeric: {value!r}") from exc
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise InputError(f"{name} {where} of {path.name} has {numbers.size} values, expected {count}")
    return numbers
