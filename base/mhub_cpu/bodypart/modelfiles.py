"""The public bpreg model directory (config.json, model.pt, inference-settings.json): find, fetch, read.

The directory is used unchanged. The public weights (CC BY-SA 4.0) are on Zenodo as a zip that
unpacks to ``public_bpr_model/``; they are downloaded once into the cache, or read from a local
directory for offline use.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mhub_cpu.bodypart.model_schema import check_config, check_settings
from mhub_cpu.bodypart.tables import postprocessing
from mhub_cpu.core.archives import check_archive
from mhub_cpu.core.cache import cache_dir, fetch, sha256_of
from mhub_cpu.core.errors import DownloadError, ModelError
from mhub_cpu.core.progress import log

PUBLIC_MODEL_URL = "https://zenodo.org/record/5113483/files/public_bpr_model.zip?download=1"
MODEL_FILES = ("config.json", "model.pt", "inference-settings.json")


@dataclass(frozen=True)
class BpregSettings:
    """What bpreg reads from ``inference-settings.json`` for inference.

    Attributes:
        lookuptable_original: landmark -> {"mean", "std"} in raw network score units.
        lookuptable: the same landmarks on the 0..100 scale (written to bpreg.json as "look-up table").
        start_landmark / end_landmark: landmarks mapped to 0 and 100 (pelvis_start, eyes_end).
        slope_mean: expected slope of the score curve, score units per mm.
        tangential_slope_min / tangential_slope_max: valid range of slice-to-slice slopes.
    """

    lookuptable_original: dict
    lookuptable: dict
    start_landmark: str
    end_landmark: str
    slope_mean: float
    tangential_slope_min: float
    tangential_slope_max: float

    @property
    def transform_min(self) -> float:
        return float(self.lookuptable_original[self.start_landmark]["mean"])

    @property
    def transform_max(self) -> float:
        return float(self.lookuptable_original[self.end_landmark]["mean"])


@dataclass(frozen=True)
class ModelDir:
    """A checked model directory."""

    path: Path
    config: dict
    settings: BpregSettings

    @property
    def weights(self) -> Path:
        return self.path / "model.pt"

    def fingerprint(self) -> str:
        """SHA-256 of the weights and config, naming the converted IR in the cache."""
        return sha256_of(self.weights)[:16] + sha256_of(self.path / "config.json")[:8]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except RecursionError:  # nested deeper than Python's parser goes
        raise ModelError(f"cannot read {path}: JSON nested too deeply") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def read_settings(path: Path) -> BpregSettings:
    """Parse ``inference-settings.json`` (keys as written by bpreg's InferenceSettingsStorage),
    checked against its closed schema (:func:`mhub_cpu.bodypart.model_schema.check_settings`)."""
    raw = check_settings(_read_json(path), needed_landmarks(), source=str(path))
    tables = raw["lookuptable_train_val"]
    settings = BpregSettings(
        lookuptable_original=tables["original"],
        lookuptable=tables["transformed"],
        start_landmark=raw["settings"]["start-landmark"],
        end_landmark=raw["settings"]["end-landmark"],
        slope_mean=raw["slope_mean"],
        tangential_slope_min=raw["lower_quantile_tangential_slope"],
        tangential_slope_max=raw["upper_quantile_tangential_slope"],
    )
    span = settings.transform_max - settings.transform_min
    if not math.isfinite(span) or span == 0:
        raise ModelError(f"{path}: start and end landmark have the same mean score; cannot scale to 0..100")
    return settings


def needed_landmarks() -> set[str]:
    """The landmarks post-processing looks up by name: those of bpreg's body-part tables."""
    table = postprocessing()
    names = {name for pair in table["body_parts"].values() for name in pair}
    names |= {name for group in table["body_parts_included"].values() for name in group}
    names |= {name for pair in table["distinct_body_parts"].values() for name in pair}
    return {name for name in names if name is not None}


def open_model_dir(path: Path) -> ModelDir:
    """Check that ``path`` holds the three bpreg model files and read the two JSON files, each
    against its closed schema (:mod:`mhub_cpu.bodypart.model_schema`)."""
    path = Path(path)
    missing = [name for name in MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise ModelError(f"model directory {path} lacks {', '.join(missing)} (expected {', '.join(MODEL_FILES)})")
    config = check_config(_read_json(path / "config.json"), source=str(path / "config.json"))
    return ModelDir(path=path, config=config, settings=read_settings(path / "inference-settings.json"))


def _find_model_root(folder: Path) -> Path:
    for candidate in [folder, *sorted(p.parent for p in folder.rglob("inference-settings.json"))]:
        if all((candidate / name).is_file() for name in MODEL_FILES):
            return candidate
    raise ModelError(f"the model archive unpacked to {folder} holds no {', '.join(MODEL_FILES)}")


def download_model(url: str = PUBLIC_MODEL_URL, expected_sha256: str | None = None) -> Path:
    """Download the model zip once (mhub_cpu.core.cache) and unpack it once; return the model directory."""
    archive = fetch(url, "bodypart", expected_sha256)
    target = cache_dir() / "bodypart" / f"model-{sha256_of(archive)[:16]}"
    if not target.exists():
        log(f"unpacking {archive.name}")
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpack-"))
        try:
            with zipfile.ZipFile(archive) as zf:
                check_archive(zf, archive)
                zf.extractall(tmp)
            tmp.rename(target)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"{archive} from {url} is not a zip archive: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _find_model_root(target)


def resolve_model(model: str | Path | None) -> ModelDir:
    """A local model directory, a URL of a model zip, or ``None`` for the public Zenodo model."""
    if model is None:
        return open_model_dir(download_model())
    text = str(model)
    if text.startswith(("http://", "https://")):
        return open_model_dir(download_model(text))
    return open_model_dir(Path(text))
