"""Don't-care regions: parts of every image (a label, a date code, a fixture) that never count.

``train --ignore MASK.png`` (white = ignore, in the images' frame, resized as they are) keeps the
mask in the model's config, as a small PNG. Every image is then blanked there before the backbone
(its normalised input set to 0, the backbone's mean colour), at training and at scoring, in
PyTorch and in the exported graph alike: whatever is printed there looks the same on every part,
so it can neither flag a part nor hide in the bank as something normal. No PyTorch here: heat
maps draw the mask on the predict path.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from anomalycli.errors import UserError


def read_masks(paths: list[Path], image_size: int) -> np.ndarray:
    """The union of the masks at ``paths`` (white, above mid-grey, = ignore), bool S x S."""
    union = np.zeros((image_size, image_size), bool)
    for path in paths:
        try:
            with Image.open(path) as image:
                grey = image.convert("L").resize((image_size, image_size), Image.NEAREST)
        except (OSError, UnidentifiedImageError):
            raise UserError(f"--ignore {path}: not an image Pillow can read; give a black-and-white PNG, white where to ignore") from None
        union |= np.asarray(grey) > 127
    if union.all():
        raise UserError("--ignore covers the whole image: nothing would be left to inspect; paint only the regions to ignore white")
    return union


def to_config(mask: np.ndarray) -> dict:
    """The mask as the model's config keeps it: a 1-bit PNG, and the share of the image it covers."""
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, "L").convert("1").save(buffer, format="PNG")
    return {"mask_png_base64": base64.b64encode(buffer.getvalue()).decode("ascii"), "share": round(float(mask.mean()), 4)}


def mask_of(config: dict) -> np.ndarray | None:
    """The model's don't-care mask (bool S x S), or None where it has none."""
    stored = config.get("ignore")
    if not stored:
        return None
    with Image.open(io.BytesIO(base64.b64decode(stored["mask_png_base64"]))) as image:
        return np.asarray(image.convert("L")) > 127


def keep_of(config: dict) -> np.ndarray | None:
    """1 x 1 x S x S float32: 0 where the model ignores, 1 elsewhere (None without a mask): what
    ``backbones.preprocess`` multiplies the normalised input by."""
    mask = mask_of(config)
    return None if mask is None else (~mask).astype(np.float32).reshape(1, 1, *mask.shape)
