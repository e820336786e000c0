"""Build configs/auto3dseg_models.json: the Slicer MONAIAuto3DSeg CT models with SNOMED CT codes per segment.

Reads data/ (the repository's copies of the source tables) and writes a deterministic JSON file:
re-running the script gives a byte-identical output.

Usage: .venv/bin/python scripts/build_model_catalog.py [--output PATH]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"
DEFAULT_OUTPUT = REPO_ROOT / "configs" / "auto3dseg_models.json"

SLICER_CATALOG = "catalog/SlicerMONAIAuto3DSeg-Models.json"
TS_MAPPING = "codes/totalsegmentator_snomed_mapping.csv"
SEGDB_FILES = {
    "segmentations": "codes/segdb_segmentations.csv",
    "categories": "codes/segdb_categories.csv",
    "types": "codes/segdb_types.csv",
    "modifiers": "codes/segdb_modifiers.csv",
}

# Same pattern Slicer's MONAIAuto3DSeg module applies to a model's download URL.
MODEL_URL_PATTERN = re.compile(r"(?P<filename>[^/]+)-v(?P<version>\d+\.\d+\.\d+)")

Code = dict[str, str]
CODE_FIELDS = ("category", "type", "type_modifier", "anatomic_region", "anatomic_region_modifier")
TS_SEQUENCES = {
    "category": "SegmentedPropertyCategoryCodeSequence",
    "type": "SegmentedPropertyTypeCodeSequence",
    "type_modifier": "SegmentedPropertyTypeModifierCodeSequence",
    "anatomic_region": "AnatomicRegionSequence",
    "anatomic_region_modifier": "AnatomicRegionModifierSequence",
}


def sct(value: str, meaning: str) -> Code:
    """A SNOMED CT code triple."""
    return {"scheme": "SCT", "value": value, "meaning": meaning}


# Segment names that do not follow the "[Left |Right ]<type>[ in <region>]" pattern of the
# TotalSegmentator mapping: (table, row id) of the row that codes the same structure.
ALIASES: dict[str, tuple[str, str]] = {
    "Left Entire atrial appendage": ("totalsegmentator", "atrial_appendage_left"),
    "Entire costal cartilage": ("totalsegmentator", "costal_cartilages"),
    "Intracerebral_Haemorrhage": ("totalsegmentator", "intracerebral_hemorrhage"),
    "rachis": ("segdb", "SPINE"),  # rachis = vertebral column
}

# Names neither table codes, with SNOMED CT codes known for certain. Codes marked [S] are the
# ones SlicerMONAIAuto3DSeg's own Resources/*.term.json (MIT) uses for these models; the
# hemorrhage category/type repeat the TotalSegmentator intracerebral_hemorrhage row.
ANATOMICAL_STRUCTURE = sct("123037004", "Anatomical Structure")
MORPHOLOGICALLY_ALTERED = sct("49755003", "Morphologically Altered Structure")
HEMORRHAGE = sct("50960005", "Hemorrhage")
CEREBELLUM = sct("113305005", "Cerebellum")
SUBARACHNOID_SPACE = sct("35951006", "Subarachnoid space")
SUBDURAL_SPACE = sct("54214006", "Subdural space")  # [S]
VENTRICULAR_SYSTEM = sct("279245009", "Ventricular system of brain")  # [S]


def _structure(type_code: Code) -> dict[str, Code]:
    return {"category": ANATOMICAL_STRUCTURE, "type": type_code}


def _hemorrhage_in(region: Code) -> dict[str, Code]:
    return {"category": MORPHOLOGICALLY_ALTERED, "type": HEMORRHAGE, "anatomic_region": region}


MANUAL: dict[str, dict[str, Code]] = {
    "Brain_Parenchyma_NOS": _structure(sct("836432005", "Parenchyma of brain")),  # [S]
    "Caudate_Nucleus": _structure(sct("11000004", "Caudate nucleus")),
    "Cerebellum": _structure(CEREBELLUM),
    "Cerebrum": _structure(sct("83678007", "Cerebrum")),
    "Internal_Capsule": _structure(sct("85637007", "Internal capsule")),  # [S]
    "Lentiform_Nucleus": _structure(sct("41648007", "Lentiform nucleus")),  # [S]
    "Subarachnoid_Space": _structure(SUBARACHNOID_SPACE),
    "Thalamus": _structure(sct("42695009", "Thalamus")),
    "Ventricular_System": _structure(VENTRICULAR_SYSTEM),
    "mandible": _structure(sct("91609006", "Mandible")),
    "Hemorrhage in Cerebellum": _hemorrhage_in(CEREBELLUM),
    "Hemorrhage in Subarachnoid space": _hemorrhage_in(SUBARACHNOID_SPACE),
    "Hemorrhage in Subdural space": _hemorrhage_in(SUBDURAL_SPACE),
    "Hemorrhage in Ventricular system of brain": _hemorrhage_in(VENTRICULAR_SYSTEM),
    "Intraventricular_Haemorrhage": _hemorrhage_in(VENTRICULAR_SYSTEM),
}

DESCRIPTION = (
    "Catalogue of the CT segmentation models of 3D Slicer's MONAIAuto3DSeg extension (MONAI Auto3DSeg "
    "SegResNet checkpoints), one entry per released version; only the first version listed by Slicer is "
    "current, the others are marked deprecated and share its title, description and segment list. Model ids "
    "are derived from the download URL exactly as Slicer does ('<name>-v<version>'). Every segment (in the "
    "catalogue's segmentNames order) carries DICOM-SEG coding: SNOMED CT category, type, modifiers, anatomic "
    "region and a display colour, taken from TotalSegmentator's SNOMED mapping (matched on type/modifier "
    "meanings), else MHub SegDB (matched on name), else a short hand-checked table in the build script; "
    "segments with no certain code keep null codes and are listed in unmapped_segments. mhub_segdb_id is the "
    "MHub SegDB id with the same type and modifier codes or the same name (for a structure in an anatomic region, "
    "SegDB's composite id REGION+PROPERTY, e.g. LEFT_KIDNEY+CYST). Colours of segments without a "
    "table colour are derived from a hash of the name. sha256 of the model zip is null until our downloader "
    "records it. reference_cpu_seconds/reference_gpu_seconds are Slicer's measured end-to-end times. "
    "Generated by scripts/build_model_catalog.py from data/; do not edit by hand."
)

SOURCES_META = {
    "slicer_catalog": {
        "file": SLICER_CATALOG,
        "origin": "https://github.com/lassoan/SlicerMONAIAuto3DSeg (MONAIAuto3DSeg/Resources/Models.json)",
        "license": "MIT",
    },
    "totalsegmentator_snomed_mapping": {
        "file": TS_MAPPING,
        "origin": "https://github.com/wasserth/TotalSegmentator (resources/totalsegmentator_snomed_mapping.csv)",
        "license": "Apache-2.0",
    },
    "segdb": {
        "files": sorted(SEGDB_FILES.values()),
        "origin": "https://github.com/MHubAI/SegDB",
        "license": "MIT",
    },
}


def read_csv(name: str) -> list[dict[str, str]]:
    """Rows of a source CSV file."""
    with (DATA_DIR / name).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def parse_color(text: str) -> list[int]:
    """'r, g, b' -> [r, g, b]."""
    return [int(part) for part in text.split(",")]


def name_color(name: str) -> list[int]:
    """Deterministic colour for a segment without a table colour."""
    return list(hashlib.sha256(name.encode("utf-8")).digest()[:3])


def ts_code(row: dict[str, str], sequence: str) -> Code | None:
    """One code of a TotalSegmentator mapping row, None if empty."""
    value = row[f"{sequence}.CodeValue"]
    if not value:
        return None
    return {
        "scheme": row[f"{sequence}.CodingSchemeDesignator"],
        "value": value,
        "meaning": row[f"{sequence}.CodeMeaning"],
    }


def ts_display_name(row: dict[str, str]) -> str:
    """Slicer-style display name of a TotalSegmentator row, lower case."""
    meaning = row["SegmentedPropertyTypeCodeSequence.CodeMeaning"]
    modifier = row["SegmentedPropertyTypeModifierCodeSequence.CodeMeaning"]
    region = row["AnatomicRegionSequence.CodeMeaning"]
    region_modifier = row["AnatomicRegionModifierSequence.CodeMeaning"]
    name = f"{modifier} {meaning}" if modifier else meaning
    if region:
        name += f" in {region_modifier} {region}" if region_modifier else f" in {region}"
    return name.lower()


class Coder:
    """Looks up SNOMED codes and SegDB ids for Slicer segment names."""

    def __init__(self) -> None:
        self.ts_rows = {row["Structure"]: row for row in read_csv(TS_MAPPING)}
        by_name: dict[str, list[str]] = {}
        for structure, row in self.ts_rows.items():
            by_name.setdefault(ts_display_name(row), []).append(structure)
        # Ambiguous display names (e.g. 'Phalanx structure' for hand and foot) are not matched.
        self.ts_by_name = {key: rows[0] for key, rows in by_name.items() if len(rows) == 1}

        tables = {key: read_csv(name) for key, name in SEGDB_FILES.items()}
        lookup = {
            key: {row["id"]: row for row in tables[key]} for key in ("categories", "types", "modifiers")
        }
        self.segdb: dict[str, dict[str, Any]] = {}
        for row in tables["segmentations"]:
            # SegDB's 'anatomic_region' column holds the segment's type id (T_...).
            self.segdb[row["id"]] = {
                "name": row["name"],
                "category": self._segdb_code(lookup["categories"], row["category"]),
                "type": self._segdb_code(lookup["types"], row["anatomic_region"]),
                "type_modifier": self._segdb_code(lookup["modifiers"], row["modifier"]),
                "color": parse_color(row["color"]),
            }
        self.segdb_by_name = {entry["name"].lower(): sid for sid, entry in self.segdb.items()}

    @staticmethod
    def _segdb_code(table: dict[str, dict[str, str]], key: str) -> Code | None:
        if not key:
            return None
        row = table[key]
        return {"scheme": row["CodingSchemeDesignator"], "value": row["CodeValue"], "meaning": row["CodeMeaning"]}

    def segment(self, name: str) -> dict[str, Any]:
        """Coded segment entry for a Slicer segment name."""
        source, key = ALIASES.get(name, (None, None))
        if source is None and name.lower() in self.ts_by_name:
            source, key = "totalsegmentator", self.ts_by_name[name.lower()]
        if source is None and name.lower() in self.segdb_by_name:
            source, key = "segdb", self.segdb_by_name[name.lower()]

        codes: dict[str, Code | None] = dict.fromkeys(CODE_FIELDS)
        ts_class = segdb_id = None
        color = name_color(name)
        if source == "totalsegmentator":
            row = self.ts_rows[key]
            ts_class = key
            codes.update({field: ts_code(row, seq) for field, seq in TS_SEQUENCES.items()})
            color = parse_color(row["DicomRGBColor"])
        elif source == "segdb":
            entry = self.segdb[key]
            segdb_id = key
            codes.update({field: entry[field] for field in ("category", "type", "type_modifier")})
            color = entry["color"]
        elif name in MANUAL:
            source = "manual"
            codes.update(MANUAL[name])

        return {
            "name": name,
            "mhub_segdb_id": segdb_id or self.segdb_id(name, codes),
            "totalsegmentator_class": ts_class,
            **codes,
            "color": color,
            "code_source": source,
        }

    def segdb_id(self, name: str, codes: dict[str, Code | None]) -> str | None:
        """SegDB id with the same type and type modifier codes, or the same name.

        A structure in an anatomic region (e.g. a cyst in the left kidney) gets SegDB's composite id
        ``<REGION>+<PROPERTY>`` (``LEFT_KIDNEY+CYST``: segdb's ``Segment`` splits ids on ``+``), when
        both the region (with its modifier) and the property match exactly one SegDB entry.
        """
        by_name = self.segdb_by_name.get(name.lower())
        if codes["type"] is None:
            return by_name
        if codes["anatomic_region"] is None:
            return self._unique_segdb(codes["type"], codes["type_modifier"]) or by_name
        region = self._unique_segdb(codes["anatomic_region"], codes["anatomic_region_modifier"])
        segmented = self._unique_segdb(codes["type"], codes["type_modifier"])
        return f"{region}+{segmented}" if region and segmented else by_name

    def _unique_segdb(self, code: Code, modifier: Code | None) -> str | None:
        """The one SegDB id whose type and modifier codes are ``code`` and ``modifier``, else None."""
        matches = [
            sid
            for sid, entry in self.segdb.items()
            if entry["type"]["value"] == code["value"]
            and (entry["type_modifier"] or {}).get("value") == (modifier or {}).get("value")
        ]
        return matches[0] if len(matches) == 1 else None


def version_key(version: str) -> tuple[int, ...]:
    """'2.0.1' -> (2, 0, 1)."""
    return tuple(int(part) for part in version.split("."))


def build_catalog() -> dict[str, Any]:
    """The whole catalogue document."""
    slicer = json.loads((DATA_DIR / SLICER_CATALOG).read_text(encoding="utf-8"))
    coder = Coder()
    models = []
    for model in slicer["models"]:
        if model.get("imagingModality") != "CT":
            continue
        segments = [coder.segment(name) for name in model["segmentNames"]]
        for index, version_entry in enumerate(model["versions"]):
            url = version_entry["url"]
            match = MODEL_URL_PATTERN.search(url)
            if match is None:
                raise ValueError(f"cannot derive a model id from {url}")
            name, version = match.group("filename"), match.group("version")
            models.append(
                {
                    "id": f"{name}-v{version}",
                    "name": name,
                    "version": version,
                    "title": model["title"],
                    "description": model.get("description"),
                    "license": model.get("license"),
                    "url": url,
                    "sha256": None,
                    "deprecated": index > 0,
                    "quick": name.endswith("-3mm") or "quick" in model["title"].lower(),
                    "reference_cpu_seconds": model.get("segmentationTimeSecCPU"),
                    "reference_gpu_seconds": model.get("segmentationTimeSecGPU"),
                    "segments": segments,
                }
            )
    models.sort(key=lambda m: (m["name"], tuple(-part for part in version_key(m["version"]))))

    unmapped = sorted({s["name"] for m in models for s in m["segments"] if s["code_source"] is None})
    sources = {key: {**meta, "sha256": _sha256_of(meta)} for key, meta in SOURCES_META.items()}
    return {"description": DESCRIPTION, "sources": sources, "unmapped_segments": unmapped, "models": models}


def _sha256_of(meta: dict[str, Any]) -> str:
    """sha256 over the source file(s), in listed order, to pin the inputs."""
    digest = hashlib.sha256()
    for name in meta.get("files", [meta.get("file")]):
        digest.update((DATA_DIR / name).read_bytes())
    return digest.hexdigest()


def render(catalog: dict[str, Any]) -> str:
    """Canonical JSON text of the catalogue."""
    return json.dumps(catalog, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the JSON")
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(build_catalog()), encoding="utf-8")


if __name__ == "__main__":
    main()
