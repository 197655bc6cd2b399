"""Label statistics (``ssdcli.data.label_stats``) on a hand-made set, and ``labels.png`` written by prepare-voc."""

from __future__ import annotations

import numpy as np
from cli_helpers import ssd
from PIL import Image

from ssdcli.data.label_stats import LABELS_PICTURE, label_stats, write_label_stats
from ssdcli.data.records import ImageRecord
from ssdcli.data.samples import SAMPLE_CLASSES, write_sample_dataset


def rec(name: str, w: int, h: int, boxes: list, labels: list, difficult: list | None = None) -> ImageRecord:
    return ImageRecord(name, "", w, h, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
                       np.array(difficult or [False] * len(labels), bool))  # fmt: skip


SPLITS = {
    "train": [
        rec("a", 100, 50, [[1, 1, 100, 50], [11, 21, 20, 25]], [1, 2]),  # the whole image; a 10 x 5 box
        rec("b", 200, 100, [], []),  # no objects
    ],
    "test": [rec("c", 40, 40, [[1, 1, 10, 40], [5, 5, 14, 14], [21, 21, 40, 40]], [2, 2, 1], [False, True, False])],
}


def test_statistics_of_a_hand_made_set():
    s = label_stats(SPLITS, ["cat", "dog"])
    assert s.splits == ["train", "test"] and s.split_index.tolist() == [0, 0, 1, 1, 1]
    np.testing.assert_array_equal(s.width_px, [100, 10, 10, 10, 20])  # xmax - xmin + 1
    np.testing.assert_array_equal(s.height_px, [50, 5, 40, 10, 20])
    np.testing.assert_allclose(s.width_rel, [1.0, 0.1, 0.25, 0.25, 0.5])
    np.testing.assert_allclose(s.height_rel, [1.0, 0.1, 1.0, 0.25, 0.5])
    np.testing.assert_allclose(s.aspect, [2.0, 2.0, 0.25, 1.0, 1.0])
    # Centres in the continuous frame: pixel i covers [i-1, i]; the whole image is centred at (0.5, 0.5).
    np.testing.assert_allclose(s.center_rel, [[0.5, 0.5], [0.15, 0.45], [0.125, 0.5], [0.225, 0.225], [0.75, 0.75]])
    counts = s.per_class()  # [split, class, (objects, difficult)]
    np.testing.assert_array_equal(counts[..., 0], [[1, 1], [1, 2]])
    np.testing.assert_array_equal(counts[..., 1], [[0, 0], [0, 1]])
    assert {k: v.tolist() for k, v in s.objects_per_image.items()} == {"train": [2, 0], "test": [3]}


def test_empty_dataset_and_picture(tmp_path):
    s = label_stats({"train": [rec("a", 10, 10, [], [])]}, ["cat"])
    assert len(s.labels) == 0 and s.per_class().shape == (1, 1, 2)
    path = write_label_stats(tmp_path, {"train": [rec("a", 10, 10, [], [])]}, ["cat"])
    with Image.open(path) as im:
        im.verify()
    path = write_label_stats(tmp_path, SPLITS, ["cat", "dog"], title="hand-made")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= 1000


def test_prepare_voc_writes_labels_png_next_to_the_manifest(tmp_path):
    write_sample_dataset(tmp_path / "voc", num_train=6, num_test=3, image_size=(48, 64), seed=0)
    out = tmp_path / "prepared"
    r = ssd("prepare-voc", tmp_path / "voc", "--out", out, "--classes", ",".join(SAMPLE_CLASSES), "--workers", 1)
    assert r.exit_code == 0, r.output
    picture = out / LABELS_PICTURE
    assert f"Label statistics: {picture}" in " ".join(r.stdout.split())
    with Image.open(picture) as im:
        im.verify()
    with Image.open(picture) as im:
        assert im.format == "PNG" and im.mode in ("RGB", "RGBA") and im.size[0] >= 1000
        pixels = np.asarray(im.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # panels drawn, not a blank page
