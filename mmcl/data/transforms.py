"""Image transforms derived from timm, sized by the vision tower's own data config."""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.data import create_transform
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from ..recipe import AugmentConfig


def image_transforms(data_config: dict, augment: AugmentConfig, located: bool = False) -> tuple[Callable, Callable]:
    """(train_transform, eval_transform) for a tower's ``timm.data.resolve_data_config`` output.

    ``located``: the training transform returns ``(tensor, box)``, where the crop came from (see
    :class:`LocatedCrop`); only the ``simclr`` preset knows its crop."""
    common = dict(
        input_size=data_config["input_size"],
        interpolation=data_config.get("interpolation", "bicubic"),
        mean=data_config["mean"],
        std=data_config["std"],
    )
    eval_tf = create_transform(**common, is_training=False, crop_pct=1.0)
    if located and not (augment.enabled and augment.preset == "simclr"):
        raise ValueError(
            "views that know where they were cropped need data.augment.enabled: true and preset: simclr "
            f"(got enabled: {augment.enabled}, preset: {augment.preset})"
        )
    if not augment.enabled:
        return eval_tf, eval_tf
    if augment.interpolation is not None:  # the training crop's resampling; evaluation keeps the tower's
        common["interpolation"] = augment.interpolation
    if augment.preset == "simclr":
        train_tf = simclr_transform(
            data_config["input_size"][-1],
            mean=data_config["mean"],
            std=data_config["std"],
            min_scale=augment.scale[0],
            max_scale=augment.scale[1],
            ratio=tuple(augment.ratio),
            interpolation=common["interpolation"],
            jitter_strength=augment.color_jitter,
            jitter_prob=augment.jitter_prob,
            hue=augment.hue,
            grayscale_prob=augment.grayscale,
            blur_prob=augment.blur,
            hflip=augment.hflip,
            located=located,
        )
        return train_tf, eval_tf
    train_tf = create_transform(
        **common,
        is_training=True,
        scale=tuple(augment.scale),
        ratio=tuple(augment.ratio),
        hflip=augment.hflip,
        color_jitter=augment.color_jitter or None,
    )
    return train_tf, eval_tf


def simclr_transform(
    size: int,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    min_scale: float = 0.08,
    jitter_strength: float = 1.0,
    jitter_prob: float = 0.8,
    grayscale_prob: float = 0.2,
    blur_prob: float = 0.5,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    hflip: float = 0.5,
    max_scale: float = 1.0,
    hue: float | None = None,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    interpolation: str = "bicubic",
    located: bool = False,
) -> Callable:
    """One SimCLR view (Chen et al. 2020, appendix A): random resized crop (scale ``min_scale``..
    ``max_scale``, aspect ``ratio``, resampled with ``interpolation``), horizontal flip, colour
    jitter (brightness/contrast/saturation ``0.8 s``, hue
    ``0.2 s`` unless ``hue`` is given) applied with probability ``jitter_prob``, grayscale, Gaussian
    blur (kernel ~10% of the side, sigma in ``blur_sigma``), then normalisation. Defaults are the
    paper's ImageNet ones; small images (CIFAR-size) usually drop the blur (``blur_prob=0``).

    ``located``: the view comes with its crop box, ``(tensor, box)`` (:class:`LocatedCrop`), for
    dense losses that pair locations by where they lie in the image. The random draws are the same
    as without it, so a seed gives the same pixels either way."""

    s = jitter_strength
    kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # odd
    crop_args = dict(scale=(min_scale, max_scale), ratio=ratio, interpolation=T.InterpolationMode(interpolation))
    if located:
        crop, steps = LocatedCrop(size, hflip=hflip, **crop_args), []
    else:
        steps = [T.RandomResizedCrop(size, **crop_args), T.RandomHorizontalFlip(hflip)]
    if s > 0 and jitter_prob > 0:
        jitter = T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s if hue is None else hue)
        steps.append(T.RandomApply([jitter], p=jitter_prob))
    steps.append(T.RandomGrayscale(grayscale_prob))
    if blur_prob > 0:
        steps.append(T.RandomApply([T.GaussianBlur(kernel, sigma=blur_sigma)], p=blur_prob))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return LocatedView(crop, T.Compose(steps)) if located else T.Compose(steps)


class LocatedCrop(T.RandomResizedCrop):
    """torchvision's random resized crop and a horizontal flip (probability ``hflip``) that also
    return where the view lies in the source image: ``(image, box)``, box = (x0, y0, x1, y1) as
    fractions of the source's width and height. A flipped view has x0 > x1, so a view position u in
    [0, 1] (left to right) lies at x0 + u * (x1 - x0) in the source either way. The random draws
    are those of ``RandomResizedCrop`` then ``RandomHorizontalFlip``."""

    def __init__(self, size, hflip: float = 0.5, **kwargs):
        super().__init__(size, **kwargs)
        self.hflip = hflip

    def forward(self, img):
        top, left, h, w = self.get_params(img, self.scale, self.ratio)
        out = TF.resized_crop(img, top, left, h, w, self.size, self.interpolation, antialias=self.antialias)
        width, height = TF.get_image_size(img)
        x0, x1 = left / width, (left + w) / width
        if torch.rand(1) < self.hflip:
            out, x0, x1 = TF.hflip(out), x1, x0
        return out, torch.tensor([x0, top / height, x1, (top + h) / height])


class LocatedView:
    """A crop that knows its box, then the pixel-wise steps: ``view(image) -> (tensor, box)``."""

    def __init__(self, crop: Callable, pixels: Callable):
        self.crop, self.pixels = crop, pixels

    def __call__(self, image) -> tuple:
        image, box = self.crop(image)
        return self.pixels(image), box

    def __repr__(self) -> str:
        return f"LocatedView({self.crop!r}, {self.pixels!r})"


class MultiView:
    """Applies each of ``transforms`` to the same image: a list of views (two for SimCLR/MoCo).

    Example:
        >>> views = MultiView(simclr_transform(224), simclr_transform(224))
        >>> a, b = views(image)
    """

    def __init__(self, *transforms: Callable):
        if len(transforms) < 2:
            raise ValueError("MultiView needs at least two transforms (one per view)")
        self.transforms = transforms

    def __call__(self, image) -> list:
        return [t(image) for t in self.transforms]

    def __repr__(self) -> str:
        return f"MultiView({len(self.transforms)} views)"
