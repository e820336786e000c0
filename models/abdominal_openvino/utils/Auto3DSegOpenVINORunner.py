"""
-------------------------------------------------
MHub - segment a CT with a MONAI Auto3DSeg model on OpenVINO (mhub-cpu engine).
-------------------------------------------------
The engine lives in its own virtual environment and is called through its command line
(`mhub-cpu segment`, or the command in $MHUB_CPU_BIN), so its dependencies never meet mhubio's.
-------------------------------------------------
"""

import json
import os
import shlex
import shutil
import subprocess
import tempfile

from mhubio.core import IO, Instance, InstanceData, Meta, Module


def engine_command() -> list[str]:
    """The engine's command line: $MHUB_CPU_BIN (split like a shell would) or `mhub-cpu` on the PATH."""
    return shlex.split(os.environ.get('MHUB_CPU_BIN', 'mhub-cpu'))


def roi_of(report: dict) -> tuple[str, list[str]]:
    """The `roi` metadata from the engine's report: MHub SegDB ids in label order (label i of the NIfTI
    is entry i), empty where SegDB has no id for a segment; and the names of those segments."""
    segments = sorted(report['result']['segments'], key=lambda s: s['label'])
    return ','.join(s['segdb_id'] or '' for s in segments), [s['name'] for s in segments if not s['segdb_id']]


@IO.Config('model', str, 'abdominal-organs-v2.0.0', the='catalogue id of the Auto3DSeg model (converted to OpenVINO IR when the image is built), a model zip, or demo')
@IO.Config('precision', str, 'auto', the='OpenVINO inference precision: auto (bf16 or int8 where the CPU runs it natively and it agrees with f32, else f32), f32, bf16, fp16 or int8')
@IO.Config('windows', str, 'dense', the='window placement: dense (as 3D Slicer), sparse or whole')
@IO.Config('seg_type', str, 'BINARY', the='DICOM-SEG type: BINARY or LABELMAP')
@IO.Config('max_memory', int, 0, the='memory budget for inference in MiB (0: no limit); windows are shrunk until the estimated peak fits')
class Auto3DSegOpenVINORunner(Module):

    model: str
    precision: str
    windows: str
    seg_type: str
    max_memory: int

    @IO.Instance()
    @IO.Input('in_data', 'dicom|nifti:mod=ct', the='CT series (DICOM folder) or CT volume (NIfTI)')
    @IO.Output('seg_data', 'segmentation.seg.dcm', 'dicomseg:mod=seg:model=Auto3DSegOpenVINO', data='in_data', the='DICOM-SEG with one segment per structure found (DICOM input only)')
    @IO.Output('label_data', 'segmentation.nii.gz', 'nifti:mod=seg:model=Auto3DSegOpenVINO', data='in_data', the='label map on the input grid, label values as in the model labels.csv')
    @IO.Output('report_data', 'segmentation.report.json', 'json:mod=report:model=Auto3DSegOpenVINO', data='in_data', the='versions, model, settings, volume per structure, timing and memory')
    def task(self, instance: Instance, in_data: InstanceData, seg_data: InstanceData, label_data: InstanceData, report_data: InstanceData) -> None:
        with tempfile.TemporaryDirectory(prefix='auto3dseg-') as work:
            command = engine_command() + [
                'segment', '--input', in_data.abspath, '--output', work, '--model', self.model,
                '--precision', self.precision, '--windows', self.windows, '--seg-type', self.seg_type,
            ] + (['--max-memory', str(self.max_memory)] if self.max_memory else [])
            self.log('run:', ' '.join(command))
            result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in result.stdout.splitlines():
                self.log(line)
            if result.returncode != 0:
                raise RuntimeError(f'mhub-cpu segment failed with exit code {result.returncode}: {result.stdout.strip().splitlines()[-1:]}')
            with open(os.path.join(work, 'report.json')) as f:
                ids, unknown = roi_of(json.load(f))
            if unknown:
                self.log('no MHub SegDB id for:', ', '.join(unknown), '(left empty in the roi metadata)')
            roi = Meta(roi=ids)
            for name, data in (('segmentation.dcm', seg_data), ('segmentation.nii.gz', label_data), ('report.json', report_data)):
                if os.path.isfile(os.path.join(work, name)):
                    shutil.move(os.path.join(work, name), data.abspath)
            seg_data.type.meta = seg_data.type.meta + roi
            label_data.type.meta = label_data.type.meta + roi
