"""Auto3DSeg model zips in the production format (``model.pt`` + ``labels.csv``) with random weights.

The real catalogue weights cannot be downloaded here; these have the catalogue's architectures,
label names and codes, and fixed-seed random weights (needs torch and MONAI).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from mhub_cpu.auto3dseg.catalog import find_entry
from mhub_cpu.auto3dseg.labels import Label, format_labels_csv
from mhub_cpu.core.progress import log


def _auto3dseg_config(outputs: int, resolution: float) -> dict:
    return {
        "roi_size": [224, 224, 144],
        "resample_resolution": [resolution] * 3,
        "normalize_mode": "range",
        "intensity_bounds": [-250.0, 450.0],
        "orientation_ras": True,
        "crop_foreground": True,
        "sigmoid": False,
        "input_channels": 1,
        "output_classes": outputs,
        "network": {
            "_target_": "SegResNetDS", "init_filters": 32, "blocks_down": [1, 2, 2, 4, 4], "dsdepth": 4,
            "in_channels": 1, "out_channels": outputs, "norm": "INSTANCE",
        },
    }


def write_random_model(path: Path, catalogue_model: str, extra_names: list[str], resolution: float, seed: int = 0) -> Path:
    """A model zip in the production format with fixed-seed random weights and catalogue labels."""
    entry = find_entry(catalogue_model)
    names = list(entry.segments) + extra_names
    labels = [entry.label_defaults(Label(value, name, {})) for value, name in enumerate(names, start=1)]
    return _write_zip(path, labels, _auto3dseg_config(len(labels) + 1, resolution), seed)


def write_tiny_model(path: Path, seed: int = 0, labels_from: str = "abdominal-organs", label_count: int = 3) -> Path:
    """A tiny model in the production format, for tests where input handling, not the network, is
    the point: SegResNetDS with 4 filters and 3 levels, a 32³ window at 6 mm, the first
    ``label_count`` labels of the catalogue model ``labels_from``. It runs a window in milliseconds."""
    entry = find_entry(labels_from)
    names = list(entry.segments)[:label_count]
    labels = [entry.label_defaults(Label(value, name, {})) for value, name in enumerate(names, start=1)]
    config = _auto3dseg_config(len(labels) + 1, 6.0)
    config["roi_size"] = [32, 32, 32]
    config["network"].update(init_filters=4, blocks_down=[1, 1, 1], dsdepth=1)
    return _write_zip(path, labels, config, seed)


def _write_zip(path: Path, labels: list[Label], config: dict, seed: int) -> Path:
    if path.exists():
        return path
    import torch

    from mhub_cpu.convert.auto3dseg import network_from_config

    torch.manual_seed(seed)
    network = network_from_config(config)
    buffer = io.BytesIO()
    torch.save({"state_dict": network.state_dict(), "config": config, "epoch": 0, "best_metric": 0.0}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path.with_suffix(".partial"), "w") as archive:
        archive.writestr("model/labels.csv", format_labels_csv(labels))
        archive.writestr("model/model.pt", buffer.getvalue())
    path.with_suffix(".partial").replace(path)
    log(f"wrote stand-in model {path} ({len(labels) + 1} outputs, {config['resample_resolution'][0]} mm, seed {seed})")
    return path
