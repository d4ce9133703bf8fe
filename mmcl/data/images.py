"""Opening images without letting a bad file stop a run."""

from __future__ import annotations

from PIL import Image, UnidentifiedImageError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# DecompressionBombError (an absurdly large image) is not an OSError
BAD_IMAGE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def load_image(source) -> tuple[Image.Image | None, str | None]:
    """``(RGB image, None)``, or ``(None, reason)`` with reason ``missing_image`` or ``corrupt_image``.

    ``source`` is a path or a file object. Decoding is forced here (``convert``), so a truncated
    file is caught now rather than inside a transform.
    """
    try:
        with Image.open(source) as im:
            return im.convert("RGB"), None
    except (FileNotFoundError, IsADirectoryError):
        return None, "missing_image"
    except BAD_IMAGE_ERRORS:
        return None, "corrupt_image"
