"""One benchmark run in its own process (so that peak memory is this run's alone).

``python -m mhub_cpu_dev.bench.run_one MODEL INPUT OUTPUT MODE`` writes OUTPUT/report.json and the
segmentation files, as ``mhub-cpu segment`` does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib

from mhub_cpu.auto3dseg.bundle import ModelBundle
from mhub_cpu.core.progress import StageTimer
from mhub_cpu.runtime.precision import Precision
from mhub_cpu.segment.job import SegmentRequest, run_segment
from mhub_cpu.segment.pipeline import InferenceSettings
from mhub_cpu.segment.splitter import WindowStrategy
from mhub_cpu_dev.bench.modes import MODES


class ReferenceSegmenter:
    """The Slicer-equivalent MONAI + PyTorch pipeline as the labelling engine of the segment job."""

    def prepare(self, request: SegmentRequest, bundle: ModelBundle, timer: StageTimer) -> None:
        self.request, self.bundle = request, bundle

    def label(self, image: nib.Nifti1Image, timer: StageTimer) -> tuple[nib.Nifti1Image, dict]:
        from mhub_cpu.convert.reference import reference_segment

        with timer.stage("inference"):
            labels = reference_segment(
                Path(str(image.get_filename())), self.bundle, overlap=self.request.settings.overlap, threads=self.request.settings.threads,
            )
        return labels, {"engine": "reference (MONAI + PyTorch fp32)", "overlap": self.request.settings.overlap}


def main(argv: list[str]) -> int:
    model, input_dir, output, mode_name = argv
    mode = MODES[mode_name]
    request = SegmentRequest(
        input_path=Path(input_dir), output_dir=Path(output), model=model,
        settings=InferenceSettings(
            precision=Precision.F32 if mode.engine == "reference" else Precision(mode.precision),
            overlap=mode.overlap, strategy=WindowStrategy(mode.strategy), skip_air=mode.skip_air,
            max_memory_mb=mode.max_memory_mb,
        ),
    )
    run_segment(request, ReferenceSegmenter() if mode.engine == "reference" else None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
