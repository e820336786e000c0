"""Random-weight model directories in the public bpreg layout, for tests and the benchmark.

The real weights (Zenodo) cannot be downloaded here, so tests and the benchmark use randomly
initialised weights in the public layout (config.json, model.pt, inference-settings.json).
``config.json`` is bpreg's published ``src/configs/cluster/public-model/public-model-v1.json``.
``inference-settings.json`` has the structure bpreg's ``InferenceSettingsStorage`` writes (derived
from its code: bpreg ships no example); the transformed landmark means are those the bpreg
inference notebook prints for the public model; the raw-score ("original") means are placed so
that a given raw range maps to pelvis_start = 0 .. eyes_end = 100; slope defaults are those of
``InferenceSettingsStorage``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

PUBLIC_CONFIG = {
    "df_data_source_path": "/gpu/data/OE0441/s429r/MetaData/meta-data-publish-model.xlsx",
    "data_path": "/gpu/data/OE0441/s429r/Arrays-3.5mm-sigma-01/",
    "landmark_path": "/gpu/data/OE0441/s429r/MetaData/landmarks-publish-model.xlsx",
    "save_dir": "/gpu/checkpoints/OE0441/s429r/results/bodypartregression/",
    "batch_size": 64, "effective_batch_size": 64, "equidistance_range": [5, 100], "num_slices": 4,
    "epochs": 480, "alpha_h": 1, "beta_h": 0.01, "loss_order": "h", "lambda_": 0, "alpha": 0, "lr": 0.0001,
    "shuffle_train_dataloader": True, "random_seed": 0, "deterministic": True, "save_model": True,
    "base_model": "vgg",
    "transform_params": {
        "GaussNoise": {"std_min": 0, "std_max": 0.04, "min_value": -1, "max_value": 1, "p": 0.5},
        "ShiftHU": {"limit": 0.08, "p": 0.5, "min_value": -1, "max_value": 1},
        "ScaleHU": {"p": 0.5, "scale_delta": 0.2, "max_value": 1, "min_value": -1},
        "AddFrame": {"p": 0.25, "r_square": 0.6, "r_circle": 0.75, "fill_value": -1, "dimension": 128},
        "Flip": {"always_apply": False, "p": 0.5},
        "Transpose": {"always_apply": False, "p": 0.5},
        "ShiftScaleRotate": {"always_apply": False, "p": 0.5, "shift_limit_x": [0, 0], "shift_limit_y": [0, 0],
                             "scale_limit": [-0.19999999999999996, 0.19999999999999996], "rotate_limit": [-10, 10],
                             "interpolation": 1, "border_mode": 4, "value": None},
        "GaussianBlur": {"always_apply": False, "p": 0.5, "blur_limit": [3, 7], "sigma_limit": [0, 0.5]},
    },
    "name": "public-model-v1.p", "model_name": "public-model", "model": "",
}

# Transformed look-up table means of the public model (bpreg docs/notebooks/inference-example.ipynb).
LANDMARK_MEANS = {
    "pelvis_start": 0.0, "femur_end": 13.616, "L5": 25.532, "pelvis_end": 28.824, "L4": 29.414,
    "L3": 33.817, "kidney": 37.597, "L2": 37.763, "L1": 41.478, "lung_start": 44.143, "Th12": 44.952,
    "Th11": 47.725, "Th10": 51.069, "Th9": 53.994, "liver_end": 54.479, "Th8": 56.856, "Th7": 59.851,
    "Th6": 63.177, "Th5": 65.964, "Th4": 68.499, "Th3": 70.973, "Th2": 73.401, "lung_end": 75.389,
    "Th1": 75.794, "C7": 77.937, "C6": 79.497, "C5": 81.826, "C4": 83.817, "C3": 85.647, "teeth": 86.908,
    "C2": 87.206, "C1": 89.234, "nose": 92.567, "eyes_end": 100.0, "head_end": 107.756,
}
LANDMARK_STD = 2.0


def inference_settings(raw_low: float, raw_high: float, slope_mean: float = 0.118) -> dict:
    """inference-settings.json content mapping raw ``raw_low`` -> 0 and ``raw_high`` -> 100."""
    span = raw_high - raw_low
    original = {k: {"mean": raw_low + v * span / 100, "std": LANDMARK_STD * abs(span) / 100} for k, v in LANDMARK_MEANS.items()}
    transformed = {k: {"mean": v, "std": LANDMARK_STD} for k, v in LANDMARK_MEANS.items()}
    tables = {"original": original, "transformed": transformed}
    return {
        "slope_mean": slope_mean, "slope_median": slope_mean, "slope_std": 0.012, "tangential_slope_mean": 0.113,
        "upper_quantile_tangential_slope": 0.25, "lower_quantile_tangential_slope": -0.037,
        "lookuptable_train": tables, "lookuptable_train_val": tables,
        "settings": {"upper_tangential_quantile": 0.995, "lower_tangential_quantile": 0.005,
                     "start-landmark": "pelvis_start", "end-landmark": "eyes_end"},
    }


def write_model_dir(path: Path, state_dict: dict, raw_low: float = -1.0, raw_high: float = 1.0, slope_mean: float = 0.118) -> Path:
    """Write a model directory in the public layout and return it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(PUBLIC_CONFIG))
    torch.save(state_dict, path / "model.pt")
    (path / "inference-settings.json").write_text(json.dumps(inference_settings(raw_low, raw_high, slope_mean), indent=4))
    return path


def random_state_dict(seed: int = 0) -> dict:
    """Randomly initialised weights with bpreg's state_dict keys.

    Kaiming-normal convolutions (fan-in, so activations keep their scale through the 13 layers) and small random biases, so
    that the score varies from slice to slice instead of collapsing to a constant.
    """
    from mhub_cpu.convert.bodypart_network import BodyPartRegressionNet

    generator = torch.Generator().manual_seed(seed)
    state = BodyPartRegressionNet().state_dict()
    for key, value in state.items():
        if key.endswith("weight") and value.dim() == 4:
            fan_in = value.shape[1] * value.shape[2] * value.shape[3]
            state[key] = torch.randn(value.shape, generator=generator) * (2.0 / fan_in) ** 0.5
        elif key.endswith("weight"):
            state[key] = torch.randn(value.shape, generator=generator) / value.shape[1] ** 0.5
        else:
            state[key] = torch.randn(value.shape, generator=generator) * 0.01
    return state


def fitted_readout(state: dict, slices: np.ndarray, ridge: float = 0.1) -> dict:
    """``state`` with the last layer (``fc7``) fitted so that raw scores rise from 0 to 1 over ``slices``.

    Random convolutional features vary by only ~4 % from slice to slice, so a random read-out
    spans ~0.002 raw over a whole CT and any numeric difference (float32 accumulation order,
    INT8, interpolation) is magnified ~40000x on the 0..100 landmark scale. A ridge-regression
    read-out of the (random) pooled features onto the slice position, ``slices`` ordered feet to
    head, makes the score follow the anatomy as a trained model's does.
    """
    from mhub_cpu.convert.bodypart_network import BodyPartRegressionNet

    net = BodyPartRegressionNet()
    net.load_state_dict(state)
    with torch.no_grad():
        trunk = net.model(torch.from_numpy(np.ascontiguousarray(slices[:, None], dtype=np.float32)))
        features = torch.relu(net.conv6(trunk)).mean(dim=(2, 3)).double().numpy()
    target = np.linspace(0.0, 1.0, len(slices))
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-12
    z = (features - mean) / std
    weights = np.linalg.solve(z.T @ z + ridge * len(z) * np.eye(z.shape[1]), z.T @ (target - target.mean())) / std
    fitted = dict(state)
    fitted["fc7.weight"] = torch.tensor(weights[None], dtype=torch.float32)
    fitted["fc7.bias"] = torch.tensor([target.mean() - weights @ mean], dtype=torch.float32)
    return fitted
