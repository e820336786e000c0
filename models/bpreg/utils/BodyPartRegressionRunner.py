"""
-------------------------------------------------
MHub - Body Part Regression on OpenVINO for CT quality assurance (mhub-cpu engine).
-------------------------------------------------
The engine lives in its own virtual environment and is called through its command line
(`mhub-cpu bodypart`, or the command in $MHUB_CPU_BIN), so its dependencies never meet mhubio's.
-------------------------------------------------
"""

import os
import shlex
import shutil
import subprocess
import tempfile

from mhubio.core import IO, Instance, InstanceData, Module


def engine_command() -> list[str]:
    """The engine's command line: $MHUB_CPU_BIN (split like a shell would) or `mhub-cpu` on the PATH."""
    return shlex.split(os.environ.get('MHUB_CPU_BIN', 'mhub-cpu'))


@IO.Config('model', str, '', the='bpreg model directory; empty: the public model, downloaded and converted when the image is built')
@IO.Config('precision', str, 'auto', the='OpenVINO inference precision: auto (bf16 or int8 where the CPU runs it natively and its scores agree with f32, else f32), f32, bf16 (CPUs with native bf16) or int8 (IR quantised when the image is built)')
@IO.Config('fast', bool, False, the='score one slice every 2.5 mm and interpolate (approximate, for a quick QA check)')
class BodyPartRegressionRunner(Module):

    model: str
    precision: str
    fast: bool

    @IO.Instance()
    @IO.Input('in_data', 'dicom|nifti:mod=ct', the='CT series (DICOM folder) or CT volume (NIfTI)')
    @IO.Output('bpreg_data', 'bpreg.json', 'json:mod=bpreg:model=BodyPartRegression', data='in_data', the='slice scores, body part examined, z-spacing and slope checks (bpreg nifti2json keys, strict JSON)')
    @IO.Output('qa_data', 'bpreg.qa.json', 'json:mod=qa:model=BodyPartRegression', data='in_data', the='QA verdicts (body part examined, slice order, z-spacing, landmarks and regions covered) or an error record')
    @IO.Output('landmarks_data', 'bpr_landmarks.sr.dcm', 'dicom:mod=sr:content=landmarks:model=BodyPartRegression', data='in_data', the='TID 1500 SR with the landmark annotations (DICOM input only)')
    @IO.Output('regions_data', 'bpr_regions.sr.dcm', 'dicom:mod=sr:content=regions:model=BodyPartRegression', data='in_data', the='TID 1500 SR with the region per slice (DICOM input only)')
    def task(self, instance: Instance, in_data: InstanceData, bpreg_data: InstanceData, qa_data: InstanceData, landmarks_data: InstanceData, regions_data: InstanceData) -> None:
        with tempfile.TemporaryDirectory(prefix='bpreg-') as work:
            command = engine_command() + ['bodypart', '--input', in_data.abspath, '--output', work, '--precision', self.precision]
            command += ['--model', self.model] if self.model else []
            command += ['--fast'] if self.fast else []
            self.log('run:', ' '.join(command))
            result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in result.stdout.splitlines():
                self.log(line)
            # qa.json holds an error record when scoring failed: keep it in either case
            for name, data in (('bpreg.json', bpreg_data), ('qa.json', qa_data), ('bpr_landmarks_sr.dcm', landmarks_data), ('bpr_regions_sr.dcm', regions_data)):
                if os.path.isfile(os.path.join(work, name)):
                    shutil.move(os.path.join(work, name), data.abspath)
            if result.returncode != 0:
                raise RuntimeError(f'mhub-cpu bodypart failed with exit code {result.returncode}: {result.stdout.strip().splitlines()[-1:]}')
