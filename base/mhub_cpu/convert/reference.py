"""Reference segmentation built with MONAI and PyTorch exactly as 3D Slicer's MONAIAuto3DSeg does.

Mirrors ``auto3dseg_segresnet_inference.py`` for a single-input, softmax CT model: load with
``LoadImaged``, normalise, ``Orientationd("RAS")``, ``CropForegroundd`` on the raw image with
margin 10, ``Spacingd`` (bilinear, min/max pixdim 0.75/1.25 × target), ``SlidingWindowInfererAdapt``
(sw_batch_size 1, Gaussian blending; overlap 0.625 unless given), softmax + argmax, ``Invertd``
with nearest interpolation. ``mhub-cpu verify`` (image builds), tests and benchmarks measure our
agreement with it; needs torch.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from mhub_cpu.auto3dseg.bundle import ModelBundle
from mhub_cpu.convert.auto3dseg import network_from_config
from mhub_cpu.convert.checkpoint import load_checkpoint
from mhub_cpu.core.progress import log
from mhub_cpu.dicomio.nifti import load_nifti


def reference_segment(image_path: Path, bundle: ModelBundle, overlap: float = 0.625, threads: int | None = None) -> nib.Nifti1Image:
    """Label map of ``image_path`` computed the Slicer way (fp32 PyTorch on CPU)."""
    import torch
    from monai.data import decollate_batch, list_data_collate
    from monai.inferers import SlidingWindowInfererAdapt
    from monai.transforms import (
        Compose,
        ConcatItemsd,
        CropForegroundd,
        EnsureTyped,
        Invertd,
        Lambdad,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )
    from monai.utils import convert_to_dst_type

    if threads:
        torch.set_num_threads(threads)
    config, state_dict = load_checkpoint(bundle.checkpoint_bytes)
    network = network_from_config(config)
    network.load_state_dict(state_dict, strict=True)
    network.eval()

    loaded = LoadImaged(keys=["image1"], ensure_channel_first=True, dtype=None, image_only=False)({"image1": str(image_path)})
    transforms = [ConcatItemsd(keys=["image1"], name="image", dim=0), EnsureTyped(keys="image", data_type="tensor", dtype=torch.float)]
    mode, bounds = config["normalize_mode"], config.get("intensity_bounds") or [0.0, 1.0]
    if mode in ("range", "ct"):
        transforms += [
            ScaleIntensityRanged(keys="image", a_min=bounds[0], a_max=bounds[1], b_min=-1, b_max=1, clip=False),
            Lambdad(keys="image", func=torch.sigmoid),
        ]
    elif mode in ("meanstd", "mri"):
        transforms.append(NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True))
    elif mode != "none":
        raise ValueError(f"reference supports normalize_mode range/ct/meanstd/mri/none, not {mode}")
    if config.get("orientation_ras", False):
        transforms.append(Orientationd(keys="image", axcodes="RAS"))
    if config.get("crop_foreground", True):
        transforms.append(CropForegroundd(keys="image", source_key="image1", margin=10, allow_smaller=True))
    if config.get("resample_resolution") is not None:
        pixdim = list(config["resample_resolution"])
        transforms.append(Spacingd(
            keys=["image"], pixdim=pixdim, mode=["bilinear"], dtype=torch.float,  # type: ignore[arg-type]
            min_pixdim=[v * 0.75 for v in pixdim], max_pixdim=[v * 1.25 for v in pixdim], allow_missing_keys=True,
        ))
    inference_transform = Compose(transforms)
    inferer = SlidingWindowInfererAdapt(
        roi_size=config["roi_size"], sw_batch_size=1, overlap=overlap, mode="gaussian",
        cache_roi_weight_map=False, progress=False,
    )
    batch = list_data_collate([inference_transform(loaded)])
    data = batch["image"].as_subclass(torch.Tensor)
    log(f"reference: sliding window over {tuple(data.shape[2:])} (MONAI, PyTorch fp32)")
    with torch.no_grad():
        logits = inferer(inputs=data, network=network)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        prediction = torch.argmax(torch.softmax(logits, dim=1), dim=1, keepdim=True).to(dtype=torch.uint8)  # type: ignore[arg-type]
    del logits
    batch["pred"] = convert_to_dst_type(prediction, batch["image"], dtype=prediction.dtype)[0]
    invert = Compose([Invertd(keys="pred", orig_keys="image", transform=inference_transform, nearest_interp=True)])
    segmentation = [invert(item)["pred"] for item in decollate_batch(batch)][0][0]
    labels = segmentation.cpu().numpy().astype(np.uint8)
    reference_image = load_nifti(image_path)
    out = nib.Nifti1Image(labels, reference_image.affine)
    out.set_data_dtype(np.uint8)
    return out


def reference_logits(bundle: ModelBundle, window: np.ndarray) -> np.ndarray:
    """The checkpoint's own logits (classes × window) for one preprocessed window, in PyTorch fp32."""
    import torch

    config, state_dict = load_checkpoint(bundle.checkpoint_bytes)
    network = network_from_config(config)
    network.load_state_dict(state_dict, strict=True)
    network.eval()
    with torch.no_grad():
        output = network(torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32))[None, None])
    return (output[0] if isinstance(output, (list, tuple)) else output)[0].numpy()
