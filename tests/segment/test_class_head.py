"""The class head split off the network (issue 24, item 1): a window's logits never exist in full,
and the labels are those of the head inside OpenVINO, within f32 rounding.

A tiny many-class stand-in (4 feature channels → 60 classes, random weights, whose near-uniform
logits make ties as likely as any model can) runs the sample CT both ways, window for window.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import CT_NIFTI
from mhub_cpu.auto3dseg.bundle import load_bundle
from mhub_cpu.convert.auto3dseg import ConvertedModel
from mhub_cpu.dicomio.nifti import load_nifti
from mhub_cpu.runtime.head import ClassHead, has_class_head
from mhub_cpu.runtime.network import Network
from mhub_cpu.runtime.precision import Precision
from mhub_cpu.segment.inferer import sliding_window_labels
from mhub_cpu.segment.merger import SlabStitcher
from mhub_cpu.segment.model import prepare_network
from mhub_cpu.segment.preprocess import model_orientation, prepare
from mhub_cpu.segment.splitter import WindowStrategy, make_plan
from mhub_cpu.segment.weights import BlendMode, importance_map
from mhub_cpu_dev.standins.auto3dseg import write_tiny_model

CLASSES = 60


@pytest.fixture(scope="module")
def many_classes(tmp_path_factory: pytest.TempPathFactory) -> dict[Precision, ConvertedModel]:
    path = write_tiny_model(tmp_path_factory.mktemp("head") / "tiny-many-v0.1.0.zip", seed=7, labels_from="whole-body",
                            label_count=CLASSES - 1)
    bundle = load_bundle(str(path))
    return {precision: prepare_network(bundle, precision) for precision in (Precision.F32, Precision.FP16)}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.parametrize("precision", [Precision.F32, Precision.FP16])
def test_the_split_head_gives_the_labels_of_the_whole_network(many_classes: dict[Precision, ConvertedModel], precision: Precision) -> None:
    model = many_classes[precision]
    assert has_class_head(model.xml_path)
    config = model.config
    prepared = prepare(model_orientation(load_nifti(CT_NIFTI), config), config)
    roi = tuple(int(v) for v in config["roi_size"])
    plan = make_plan(prepared.image.shape, roi, WindowStrategy.DENSE, 0.625, int(config["size_divisor"]))  # type: ignore[arg-type]
    whole = Network(model.xml_path, precision, input_shape=(1, 1, *plan.window))
    split = Network(model.xml_path, precision, input_shape=(1, 1, *plan.window), split_head=True)
    assert whole.head is None and split.head is not None
    assert (split.head.classes, split.head.features) == (CLASSES, int(config["init_filters"]))
    window = np.zeros((1, 1, *plan.window), np.float32)
    assert split(window).shape[1] == split.head.features, "OpenVINO returns the feature maps, not the classes"
    assert sum(whole.ran.layers["Convolution"].values()) == sum(split.ran.layers["Convolution"].values()) + 1  # the head left OpenVINO

    def run(network: Network) -> np.ndarray:
        return sliding_window_labels(prepared.image, lambda w: network(w[None, None])[0], plan, CLASSES, BlendMode.GAUSSIAN,
                                     head=network.head)[0]

    ours, theirs = run(split), run(whole)
    differing = int(np.count_nonzero(ours != theirs))
    present = [v for v in np.unique(theirs) if np.count_nonzero(theirs == v) >= 500]
    scores = {int(v): dice(ours == v, theirs == v) for v in present}
    print(f"\n{precision}: {plan.count} windows, {differing} of {ours.size} voxels differ, {len(present)} labels present, "
          f"lowest Dice {min(scores.values()):.6f}")
    assert len(present) >= 5, "the stand-in must label several structures for the comparison to mean anything"
    assert min(scores.values()) >= 0.9999, scores
    assert differing <= ours.size * 1e-4


def test_chunked_logits_equal_the_logits_added_whole() -> None:
    rng = np.random.default_rng(3)
    head = ClassHead(rng.normal(size=(118, 32)).astype(np.float32), rng.normal(size=118).astype(np.float32))
    roi = (16, 12, 8)
    weights = importance_map(roi, BlendMode.GAUSSIAN)
    from_features = SlabStitcher((40, 12, 24), roi, 118, weights, workers=2)
    from_logits = SlabStitcher((40, 12, 24), roi, 118, weights, workers=2)
    for start in [(0, 0, 0), (24, 0, 0), (8, 0, 8), (24, 0, 16)]:
        features = rng.normal(size=(32, *roi)).astype(np.float32)
        from_logits.add(start, head(features))
        from_features.add(start, features.copy(), head)
    assert np.array_equal(from_features.finish(), from_logits.finish())


def test_rows_per_chunk_bounds_the_logits_held_at_a_time() -> None:
    head = ClassHead(np.zeros((118, 32), np.float32), np.zeros(118, np.float32))
    rows = head.rows_per_chunk(224 * 144)
    assert rows >= 1 and rows * 224 * 144 * 118 * 4 <= 32 << 20
