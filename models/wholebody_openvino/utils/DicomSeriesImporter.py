"""
-------------------------------------------------
MHub - DICOM series importer (one instance per series), without dicomsort.
-------------------------------------------------
mhubio's DicomImporter needs the `dicomsort` tool and calls `pydicom.read_file`, which pydicom 3
removed. This importer reads headers with `pydicom.dcmread` (pydicom 2 and 3), groups the files
by SeriesInstanceUID and links them into `<import_dir>/<sid>/dicom/`, as DicomImporter does.
-------------------------------------------------
"""

import os
import shutil
from collections import defaultdict

import pydicom
from mhubio.core import IO, DataType, DirectoryChain, FileType, Instance, InstanceData, Meta, Module

UNKNOWN_SERIES = "unknown-series"


def scan_series(source_dir: str) -> dict[str, list[tuple[str, str]]]:
    """Map SeriesInstanceUID (or UNKNOWN_SERIES when blank) to (path, modality) of each DICOM file below source_dir."""
    series: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for root, _, names in os.walk(source_dir, followlinks=True):
        for name in sorted(names):
            path = os.path.join(root, name)
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "Modality"])
            except Exception:  # not a DICOM file: ignored, as dicomsort ignores it
                continue
            uid = str(ds.get("SeriesInstanceUID", "") or "").strip() or UNKNOWN_SERIES
            series[uid].append((path, str(ds.get("Modality", "") or "").strip()))
    return series


def link_or_copy(source: str, target: str) -> None:
    """Hard-link source to target where the file system allows it, else copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@IO.Config('source_dir', str, 'input_data', the='folder holding the DICOM files (any nesting), relative to data_base_dir')
@IO.Config('import_dir', str, 'sorted_data', the='folder that receives one sub-folder per series, relative to data_base_dir')
class DicomSeriesImporter(Module):

    source_dir: str
    import_dir: str

    def task(self) -> None:
        source = DirectoryChain(path=self.source_dir, parent=self.config.data.dc).abspath
        target = DirectoryChain(path=self.import_dir, parent=self.config.data.dc).abspath
        series = scan_series(source)
        self.log(f"found {len(series)} DICOM series in {source}")
        for sid, files in sorted(series.items()):
            modality = next((m for _, m in files if m), "")
            instance = Instance(os.path.join(target, sid))
            instance.attr['sid'] = sid
            self.config.data.addInstance(instance)
            dicom_data = InstanceData('dicom', DataType(FileType.DICOM, Meta(mod=modality.lower())), instance)
            os.makedirs(dicom_data.abspath, exist_ok=True)
            for i, (path, _) in enumerate(files):
                link_or_copy(path, os.path.join(dicom_data.abspath, f"{i:05d}_{os.path.basename(path)}"))
            dicom_data.confirm()
            self.log(f"imported series {sid}: {len(files)} files, modality {modality or 'unknown'}")
