"""Train the small demo segmentation model and write it in the Auto3DSeg zip format.

A SegResNetDS (MONAI) is fitted to ONE CT, ``data/ct/abdomen_3mm.nii.gz``, against its
TotalSegmentator label map mapped to the labels of the catalogue's ``abdominal-organs`` model.
It is a demonstration model for tests and ``make demo`` — it has seen a single patient and must
not be used on real data.

The data goes through the engine's own preprocessing (:func:`mhub_cpu.segment.preprocess.prepare`)
so that training and inference see identical inputs. Run from the repository root::

    .venv/bin/python demo/train_demo_model.py --output /tmp/stage1.zip
    .venv/bin/python demo/train_demo_model.py --init /tmp/stage1.zip --patch 96 --iterations 200 \
        --lr 1e-3 --seed 1 --output demo/abdominal-organs-demo-v0.1.0.zip
"""

from __future__ import annotations

import argparse
import io
import json
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from mhub_cpu.auto3dseg.catalog import find_entry
from mhub_cpu.auto3dseg.labels import Label, format_labels_csv
from mhub_cpu.convert import network_from_config
from mhub_cpu.segment.preprocess import nearest_indices, prepare, to_canonical

SHARED = Path(__file__).resolve().parents[1] / "data"
TOTALSEG_IDS = SHARED / "codes" / "totalsegmentator_total_v2_labels.json"
#: TotalSegmentator v2 classes of the abdominal-organs model, in our label-value order.
CLASSES = [
    "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
    "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left",
    "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right", "esophagus", "trachea",
    "small_bowel", "duodenum", "colon", "urinary_bladder", "prostate", "kidney_cyst_left", "kidney_cyst_right",
]

CONFIG = {
    "roi_size": [96, 96, 96],
    "resample_resolution": [2.2, 2.2, 2.2],
    "normalize_mode": "range",
    "intensity_bounds": [-200.0, 300.0],
    "orientation_ras": True,
    "crop_foreground": True,
    "sigmoid": False,
    "input_channels": 1,
    "output_classes": len(CLASSES) + 1,
    "network": {
        "_target_": "SegResNetDS",
        "init_filters": 8,
        "blocks_down": [1, 2, 2, 4],
        "dsdepth": 2,
        "in_channels": 1,
        "out_channels": len(CLASSES) + 1,
        "norm": "INSTANCE",
    },
}


def training_data() -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed image and label map on the model grid."""
    image = to_canonical(nib.load(SHARED / "ct" / "abdomen_3mm.nii.gz"))
    reference = to_canonical(nib.load(SHARED / "ct" / "abdomen_3mm_totalseg_labels.nii.gz"))
    prepared = prepare(image, CONFIG)
    totalseg = {name: int(i) for i, name in json.loads(TOTALSEG_IDS.read_text()).items()}
    lookup = np.zeros(256, dtype=np.uint8)
    for value, name in enumerate(CLASSES, start=1):
        lookup[totalseg[name]] = value
    labels = lookup[np.asarray(reference.dataobj, dtype=np.int64)][prepared.crop_box]
    # nearest-neighbour labels on the model grid: model voxel i samples input index i·target/spacing
    index = [
        nearest_indices(prepared.image.shape[axis], prepared.model_spacing[axis], prepared.input_spacing[axis], labels.shape[axis])
        for axis in range(3)
    ]
    return prepared.image, labels[np.ix_(*index)]


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    """Cross-entropy plus soft Dice over the foreground classes present in the patch."""
    ce = torch.nn.functional.cross_entropy(logits, target)
    probabilities = torch.softmax(logits, dim=1)
    onehot = torch.nn.functional.one_hot(target, classes).permute(0, 4, 1, 2, 3).float()
    intersection = (probabilities * onehot).sum(dim=(0, 2, 3, 4))
    total = probabilities.sum(dim=(0, 2, 3, 4)) + onehot.sum(dim=(0, 2, 3, 4))
    present = onehot.sum(dim=(0, 2, 3, 4))[1:] > 0
    if not present.any():
        return ce
    dice = (2 * intersection[1:] + 1e-5) / (total[1:] + 1e-5)
    return ce + (1 - dice[present].mean())


def random_crop(image: np.ndarray, labels: np.ndarray, roi: list[int], rng: np.random.Generator):
    """A patch centred, two times in three, on a voxel of a randomly chosen class present in the image."""
    pads = [(0, max(r - n, 0)) for n, r in zip(image.shape, roi)]
    image, labels = np.pad(image, pads), np.pad(labels, pads)
    present = [v for v in np.unique(labels) if v != 0]
    if rng.random() < 2 / 3 and present:
        voxels = np.argwhere(labels == rng.choice(present))
        centre = voxels[rng.integers(len(voxels))]
        start = [int(np.clip(c - r // 2, 0, n - r)) for c, r, n in zip(centre, roi, image.shape)]
    else:
        start = [int(rng.integers(0, n - r + 1)) for n, r in zip(image.shape, roi)]
    box = tuple(slice(s, s + r) for s, r in zip(start, roi))
    return image[box], labels[box]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--patch", type=int, default=64, help="training patch edge (voxels); inference uses roi_size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", type=Path, help="continue from the weights of an earlier model zip")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(args.seed)
    image, labels = training_data()
    print(f"training grid {image.shape}, labels present {sorted(np.unique(labels).tolist())}")
    network = network_from_config(CONFIG)
    if args.init:
        with zipfile.ZipFile(args.init) as archive:
            earlier = torch.load(io.BytesIO(archive.read("model/model.pt")), map_location="cpu", weights_only=False)
        network.load_state_dict(earlier["state_dict"])
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.iterations)
    classes = CONFIG["output_classes"]
    start = time.time()
    network.train()
    for iteration in range(1, args.iterations + 1):
        crop_image, crop_labels = random_crop(image, labels, [args.patch] * 3, rng)
        crop_image = crop_image * rng.uniform(0.95, 1.05) + rng.uniform(-0.03, 0.03)
        x = torch.from_numpy(np.ascontiguousarray(crop_image, dtype=np.float32))[None, None]
        y = torch.from_numpy(np.ascontiguousarray(crop_labels, dtype=np.int64))[None]
        outputs = network(x)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        loss = dice_ce_loss(outputs[0], y, classes)
        for level, extra in enumerate(outputs[1:], start=1):  # deep supervision at lower resolution
            small = torch.nn.functional.interpolate(y[:, None].float(), size=extra.shape[2:], mode="nearest")[:, 0].long()
            loss = loss + 0.5**level * dice_ce_loss(extra, small, classes)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if iteration % 25 == 0 or iteration == 1:
            print(f"iteration {iteration}/{args.iterations} loss {loss.item():.4f} ({time.time() - start:.0f} s)", flush=True)

    network.eval()
    entry = find_entry("abdominal-organs")
    names = {segment["totalsegmentator_class"]: name for name, segment in entry.segments.items()}
    labels_csv = format_labels_csv([
        entry.label_defaults(Label(value=value, name=names[cls], codes={}))
        for value, cls in enumerate(CLASSES, start=1)
    ])
    checkpoint = io.BytesIO()
    state = {k: v.detach().clone() for k, v in network.state_dict().items()}
    torch.save({"state_dict": state, "config": CONFIG, "epoch": args.iterations, "best_metric": 0.0}, checkpoint)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(args.output, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model/labels.csv", labels_csv)
        archive.writestr("model/model.pt", checkpoint.getvalue())
    print(f"wrote {args.output} ({args.output.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
