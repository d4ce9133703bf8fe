"""Image transforms derived from timm, sized by the vision tower's own data config."""

from __future__ import annotations

from collections.abc import Callable

from timm.data import create_transform

from ..config import AugmentConfig


def image_transforms(data_config: dict, augment: AugmentConfig) -> tuple[Callable, Callable]:
    """(train_transform, eval_transform) for a tower's ``timm.data.resolve_data_config`` output."""
    common = dict(
        input_size=data_config["input_size"],
        interpolation=data_config.get("interpolation", "bicubic"),
        mean=data_config["mean"],
        std=data_config["std"],
    )
    eval_tf = create_transform(**common, is_training=False, crop_pct=1.0)
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
) -> Callable:
    """One SimCLR view (Chen et al. 2020, appendix A): random resized crop (scale ``min_scale``..
    ``max_scale``, aspect ``ratio``, resampled with ``interpolation``), horizontal flip, colour
    jitter (brightness/contrast/saturation ``0.8 s``, hue
    ``0.2 s`` unless ``hue`` is given) applied with probability ``jitter_prob``, grayscale, Gaussian
    blur (kernel ~10% of the side, sigma in ``blur_sigma``), then normalisation. Defaults are the
    paper's ImageNet ones; small images (CIFAR-size) usually drop the blur (``blur_prob=0``)."""
    from torchvision import transforms as T

    s = jitter_strength
    kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # odd
    steps = [
        T.RandomResizedCrop(
            size, scale=(min_scale, max_scale), ratio=ratio, interpolation=T.InterpolationMode(interpolation)
        ),
        T.RandomHorizontalFlip(hflip),
    ]
    if s > 0 and jitter_prob > 0:
        jitter = T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s if hue is None else hue)
        steps.append(T.RandomApply([jitter], p=jitter_prob))
    steps.append(T.RandomGrayscale(grayscale_prob))
    if blur_prob > 0:
        steps.append(T.RandomApply([T.GaussianBlur(kernel, sigma=blur_sigma)], p=blur_prob))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


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
