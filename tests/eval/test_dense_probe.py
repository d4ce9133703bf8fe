"""The per-pixel probe: segmentation metrics against hand counts and sklearn, a probe that must
find classes the features encode (and not invent them from noise), determinism, and loading
images with masks (resized in register, bad rows skipped and counted)."""

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import jaccard_score

from mmcl.errors import ConfigError
from mmcl.eval.dense_probe import dense_probe, load_segmentation, segmentation_metrics


def test_segmentation_metrics_by_hand_and_against_sklearn():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 0, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 0]])
    m = segmentation_metrics(pred, target, num_classes=4)  # class 3 never occurs: ignored
    assert m["pixel_acc"] == pytest.approx(6 / 8)
    # IoU: class 0: 3 / 5, class 1: 2 / 3, class 2: 1 / 2
    assert m["mean_iou"] == pytest.approx((3 / 5 + 2 / 3 + 1 / 2) / 3)
    assert m["mean_iou"] == pytest.approx(jaccard_score(target.flatten(), pred.flatten(), average="macro"))
    assert m["mean_class_acc"] == pytest.approx((3 / 4 + 2 / 2 + 1 / 2) / 3)
    assert m["foreground_iou"] == pytest.approx(3 / 5)  # foreground: 4 target and 4 predicted pixels, 3 shared
    assert m["num_classes_present"] == 3


def toy(n, seed, informative=True):
    """Masks of a square of class 1..3 on background 0 (16 x 16); 4 x 4 features that one-hot the
    class of each cell's centre pixel (informative) or are noise."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, 16, 16, dtype=torch.long)
    for i in range(n):
        r, c = torch.randint(0, 8, (2,), generator=g).tolist()
        masks[i, r : r + 8, c : c + 8] = int(torch.randint(1, 4, (1,), generator=g))
    if informative:
        centre = masks[:, 2::4, 2::4]
        feats = F.one_hot(centre, 4).permute(0, 3, 1, 2).double() + 0.05 * torch.randn(n, 4, 4, 4, generator=g)
    else:
        feats = torch.randn(n, 4, 4, 4, generator=g, dtype=torch.float64)
    return feats.float(), masks


def test_probe_finds_what_the_features_encode_and_nothing_from_noise():
    tr, te = toy(64, 0), toy(32, 1)
    good = dense_probe(*tr, *te, epochs=20, lr=5e-2, batch_size=16)
    assert good["mean_iou"] > 0.6 and good["pixel_acc"] > 0.85  # 4x4 cells for 16x16 masks
    assert good["feature_grid"] == [4, 4] and good["num_train"] == 64 and good["num_test"] == 32
    noise = dense_probe(*toy(64, 0, False), *toy(32, 1, False), epochs=20, lr=5e-2, batch_size=16)
    assert noise["mean_iou"] < good["mean_iou"] - 0.3 and noise["foreground_iou"] < 0.2
    again = dense_probe(*tr, *te, epochs=20, lr=5e-2, batch_size=16)
    assert again == good  # seeded: identical


def test_probe_argument_checks():
    f, m = toy(4, 0)
    with pytest.raises(ValueError, match=r"\(N, C, h, w\)"):
        dense_probe(f.flatten(2), m, f, m)
    with pytest.raises(ValueError, match="same number of items"):
        dense_probe(f, m[:2], f, m)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        dense_probe(f, m, f, m, epochs=0)


def test_load_segmentation_keeps_masks_in_register_and_skips_bad_rows(tmp_path):
    rows = []
    for i in range(3):
        img = np.zeros((20, 20, 3), np.uint8)
        mask = np.zeros((20, 20), np.uint8)
        img[: 10 + 2 * i, :] = 255  # a white band of class 2: 10, 12, 14 of 20 rows
        mask[: 10 + 2 * i, :] = 2
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        Image.fromarray(mask).save(tmp_path / f"{i}-mask.png")
        rows.append({"filepath": f"{i}.png", "mask": f"{i}-mask.png"})
    rows.append({"filepath": "0.png", "mask": "gone.png"})
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    rows.append({"filepath": "0.png", "mask": "corrupt.png"})
    with open(tmp_path / "seg.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["filepath", "mask"])
        w.writeheader()
        w.writerows(rows)
    images, masks, skipped = load_segmentation(
        str(tmp_path / "seg.csv"), "filepath", "mask", 10, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    )
    assert images.shape == (3, 3, 10, 10) and masks.shape == (3, 10, 10) and masks.dtype == torch.long
    assert skipped == {"missing_mask": 1, "corrupt_mask": 1}
    assert set(masks.unique().tolist()) == {0, 2}
    # halved: the band covers 5, 6 and 7 rows of the mask and of the image (white, normalised to +1)
    assert (masks == 2).sum(dim=(1, 2)).tolist() == [50, 60, 70]
    assert ((images[:, 0] > 0).sum(dim=(1, 2))).tolist() == [50, 60, 70]
    with pytest.raises(ConfigError, match="column 'seg'.*available columns: filepath, mask"):
        load_segmentation(str(tmp_path / "seg.csv"), "filepath", "seg", 10, (0,) * 3, (1,) * 3)


def test_ignored_pixels_are_neither_trained_on_nor_scored():
    target = torch.tensor([[0, 1, 255, 255]])
    pred = torch.tensor([[0, 1, 0, 1]])
    m = segmentation_metrics(pred, target, num_classes=2, ignore_index=255)
    assert m["pixel_acc"] == 1.0 and m["mean_iou"] == 1.0
    (f_tr, m_tr), (f_te, m_te) = toy(32, 0), toy(16, 1)
    m_tr[:, :4] = 255  # VOC-style border label on the top rows
    out = dense_probe(f_tr, m_tr, f_te, m_te, epochs=5, lr=5e-2, batch_size=16)
    assert out["num_classes_present"] == 4  # 255 is not a class
