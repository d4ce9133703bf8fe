"""SimCLR two-view transform (also views that know their crop box), and records with two images
(paired modalities)."""

import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from mmcl.data import ImageTextCollate, PairedImageTextDataset
from mmcl.data.pairs import ItemMaker, seeded
from mmcl.data.sources import build_train_data
from mmcl.data.transforms import MultiView, simclr_transform
from mmcl.errors import ConfigError
from mmcl.recipe import AugmentConfig, DataConfig

from .corpora import _add, jpeg_bytes, rows


def photo(seed=0, size=64):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_simclr_views_differ_and_are_reproducible_under_a_seed():
    views = MultiView(simclr_transform(32), simclr_transform(32))
    with seeded(1):
        a, b = views(photo())
    with seeded(1):
        a2, b2 = views(photo())
    assert a.shape == b.shape == (3, 32, 32)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert not torch.allclose(a, b)


def test_simclr_grayscale_and_jitter_rates():
    """With jitter and blur off and grayscale always on, every view is gray; with the paper's
    grayscale rate about 20% of views are."""
    gray = simclr_transform(16, mean=(0, 0, 0), std=(1, 1, 1), grayscale_prob=1.0, jitter_prob=0, blur_prob=0)
    v = gray(photo())
    assert torch.allclose(v[0], v[1]) and torch.allclose(v[1], v[2])
    t = simclr_transform(16, mean=(0, 0, 0), std=(1, 1, 1), jitter_prob=0, blur_prob=0)
    torch.manual_seed(0)
    n_gray = sum(bool(torch.allclose((x := t(photo(i)))[0], x[1]) and torch.allclose(x[1], x[2])) for i in range(300))
    assert 40 <= n_gray <= 80  # 20% of 300 = 60


def test_multiview_needs_two_transforms():
    with pytest.raises(ValueError, match="at least two"):
        MultiView(simclr_transform(8))


def test_collate_stacks_two_views_and_paired_images():
    make = ItemMaker(MultiView(simclr_transform(16), simclr_transform(16)), seed=0, need_caption=False)
    items = [make(photo(i), [], i % 2, i, 0) for i in range(4)] + [(None, "corrupt_image")]
    batch = ImageTextCollate(None)(items)
    assert batch["images"].shape == batch["images2"].shape == (4, 3, 16, 16)
    assert batch["skipped"] == {"corrupt_image": 1} and batch["size"] == 4
    assert batch["label"].tolist() == [0, 1, 0, 1] and "input_ids" not in batch


def test_paired_image_columns_in_csv(tiny_corpus, tmp_path):
    table = rows(tiny_corpus)
    path = tmp_path / "pairs.csv"
    with open(path, "w") as f:
        f.write("photo,sketch\n")
        for i, r in enumerate(table[:8]):
            f.write(f"{tiny_corpus / r['filepath']},{tiny_corpus / table[(i + 1) % 8]['filepath']}\n")
    tf = simclr_transform(16, blur_prob=0)
    ds = PairedImageTextDataset(
        path, tf, image_key="photo", caption_key=None, image2_key="sketch", seed=0, need_caption=False
    )
    item = ds[0]
    assert item["image"].shape == item["image2"].shape == (3, 16, 16)
    with pytest.raises(ConfigError, match="'depth' .*available columns: photo, sketch"):
        PairedImageTextDataset(path, tf, image_key="photo", caption_key=None, image2_key="depth", need_caption=False)


def test_paired_images_share_the_random_crop(tiny_corpus, tmp_path):
    """The two images of a pair get the same augmentation draws (they stay in register); the two
    views of a two-view transform do not."""
    table = rows(tiny_corpus)
    path = tmp_path / "same.csv"
    with open(path, "w") as f:
        f.write("photo,copy\n")
        for r in table[:4]:
            f.write(f"{tiny_corpus / r['filepath']},{tiny_corpus / r['filepath']}\n")
    tf = simclr_transform(16, blur_prob=0, min_scale=0.2)
    ds = PairedImageTextDataset(path, tf, image_key="photo", image2_key="copy", seed=0, need_caption=False)
    for i in range(4):
        assert torch.equal(ds[i]["image"], ds[i]["image2"])
    views = PairedImageTextDataset(path, MultiView(tf, tf), image_key="photo", seed=0, need_caption=False)
    a, b = views[0]["image"]
    assert not torch.equal(a, b)


def test_paired_images_in_webdataset_shards(tiny_corpus, tmp_path):
    table = rows(tiny_corpus)
    shard = tmp_path / "00000.tar"
    with tarfile.open(shard, "w") as tar:
        for i, r in enumerate(table[:8]):
            _add(tar, f"{i:09d}.jpg", jpeg_bytes(tiny_corpus / r["filepath"]))
            if i != 3:  # one sample lacks its second image: skipped as missing
                _add(tar, f"{i:09d}.depth.png", (tiny_corpus / r["filepath"]).read_bytes())
    cfg = DataConfig(train=str(shard), image2_key="depth.png", batch_size=4, augment=AugmentConfig(enabled=False))
    tf = simclr_transform(16, blur_prob=0)
    data = build_train_data(cfg, tf, None, need_caption=False)
    data.start_epoch(0, 0, {})
    batches = list(data.loader)
    assert sum(b["size"] for b in batches) == 7
    assert sum(b["skipped"].get("missing_image", 0) for b in batches) == 1
    assert batches[0]["images2"].shape == (4, 3, 16, 16)


def test_simclr_preset_takes_the_crop_interpolation_and_ratio_from_the_recipe():
    from torchvision import transforms as T

    from mmcl.data.transforms import image_transforms

    data_config = {"input_size": (3, 16, 16), "interpolation": "bicubic", "mean": (0,) * 3, "std": (1,) * 3}

    def crop(augment):
        train, _ = image_transforms(data_config, augment)
        return next(t for t in train.transforms if isinstance(t, T.RandomResizedCrop))

    default = crop(AugmentConfig(preset="simclr"))
    assert default.interpolation == T.InterpolationMode.BICUBIC  # the tower's own
    assert default.ratio == (3 / 4, 4 / 3)  # torchvision's and the paper's
    chosen = crop(AugmentConfig(preset="simclr", interpolation="bilinear", ratio=[1.0, 1.0]))
    assert chosen.interpolation == T.InterpolationMode.BILINEAR and chosen.ratio == (1.0, 1.0)


def coordinate_image(size=64):
    """Red rises with x and green with y, so a pixel says where in the image it came from."""
    ramp = np.round(np.linspace(0, 255, size)).astype(np.uint8)
    rgb = np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.zeros((size, size), np.uint8)], -1)
    return Image.fromarray(rgb)


def test_located_views_say_where_they_were_cropped_and_flipped():
    plain = simclr_transform(16, jitter_strength=0, grayscale_prob=0, blur_prob=0, mean=(0,) * 3, std=(1,) * 3)
    located = simclr_transform(
        16, jitter_strength=0, grayscale_prob=0, blur_prob=0, mean=(0,) * 3, std=(1,) * 3, located=True
    )
    flips = 0
    for seed in range(12):
        with seeded(seed):
            expected = plain(coordinate_image())
        with seeded(seed):
            view, (x0, y0, x1, y1) = located(coordinate_image())
        torch.testing.assert_close(view, expected)  # the same random draws, so the same pixels
        flips += bool(x0 > x1)
        # the view's corner cells show the source colours at the box's corners (to within a pixel or two)
        for row, col, x, y in ((0, 0, x0, y0), (0, 15, x1, y0), (15, 0, x0, y1), (15, 15, x1, y1)):
            inward_x = (1 if col == 0 else -1) * (x1 - x0) / 32  # the cell centre lies half a cell inside
            inward_y = (1 if row == 0 else -1) * (y1 - y0) / 32
            assert abs(float(view[0, row, col]) - float(x + inward_x)) < 0.04, (seed, row, col)
            assert abs(float(view[1, row, col]) - float(y + inward_y)) < 0.04, (seed, row, col)
    assert 0 < flips < 12


def test_collate_keeps_the_crop_boxes_of_located_views():
    view = simclr_transform(16, located=True)
    make = ItemMaker(MultiView(view, view), seed=0, need_caption=False)
    batch = ImageTextCollate(None)([make(photo(i), [], 0, i, 0) for i in range(3)])
    assert batch["images"].shape == batch["images2"].shape == (3, 3, 16, 16)
    assert batch["boxes"].shape == batch["boxes2"].shape == (3, 4)
    assert not torch.equal(batch["boxes"], batch["boxes2"])
    assert ((batch["boxes"] >= 0) & (batch["boxes"] <= 1)).all()


def test_located_views_need_the_simclr_preset():
    from mmcl.data.transforms import image_transforms

    data_config = {"input_size": (3, 16, 16), "interpolation": "bicubic", "mean": (0,) * 3, "std": (1,) * 3}
    with pytest.raises(ValueError, match="preset: simclr"):
        image_transforms(data_config, AugmentConfig(preset="timm"), located=True)
