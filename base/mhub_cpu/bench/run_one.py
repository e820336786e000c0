"""One benchmark run in its own process (so that peak memory is this run's alone).

``python -m mhub_cpu.bench.run_one MODEL INPUT OUTPUT MODE`` writes OUTPUT/report.json and the
segmentation files, as ``mhub-cpu segment`` does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib

from ..auto3dseg.bundle import ModelBundle
from ..progress import StageTimer
from ..segment import SegmentRequest, run_segment
from .modes import MODES


def reference_segmenter(request: SegmentRequest, bundle: ModelBundle, image: nib.Nifti1Image, timer: StageTimer):
    """The Slicer-equivalent MONAI + PyTorch pipeline as a labelling engine of the segment job."""
    from ..reference.slicer_monai import reference_segment

    with timer.stage("inference"):
        labels = reference_segment(Path(image.get_filename()), bundle, overlap=request.overlap, threads=request.threads)
    return labels, {"engine": "reference (MONAI + PyTorch fp32)", "overlap": request.overlap}


def main(argv: list[str]) -> int:
    model, input_dir, output, mode_name = argv
    mode = MODES[mode_name]
    request = SegmentRequest(
        input_path=Path(input_dir), output_dir=Path(output), model=model,
        precision="f32" if mode.engine == "reference" else mode.precision,
        overlap=mode.overlap, strategy=mode.strategy, skip_air=mode.skip_air, max_memory_mb=mode.max_memory_mb,
    )
    if mode.engine == "reference":
        run_segment(request, reference_segmenter)
    else:
        run_segment(request)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
