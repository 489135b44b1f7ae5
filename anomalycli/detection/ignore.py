"""Don't-care regions: parts of every image (a label, a date code, a fixture) that never count.

``train --ignore MASK.png`` (white = ignore, in the images' frame, resized as they are) keeps the
mask in the model's config, as a small PNG. ``--ignore SHAPES.json`` takes polygons and rectangles
drawn in LabelMe (its JSON: ``imageWidth``, ``imageHeight``, ``shapes``), an offline tool a line
engineer can draw on one of the images with. Every image is then blanked there before the backbone
(its normalised input set to 0, the backbone's mean colour), at training and at scoring, in
PyTorch and in the exported graph alike: whatever is printed there looks the same on every part,
so it can neither flag a part nor hide in the bank as something normal. No PyTorch here: heat
maps draw the mask on the predict path.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from anomalycli.data.images import binary_mask
from anomalycli.errors import UserError


def read_masks(paths: list[Path], image_size: int) -> np.ndarray:
    """The union of the masks at ``paths`` (white, above mid-grey, = ignore), bool S x S."""
    union = np.zeros((image_size, image_size), bool)
    for path in paths:
        mask = drawn_shapes(path) if path.suffix.lower() == ".json" else _painted(path)
        union |= np.asarray(mask.resize((image_size, image_size), Image.NEAREST)) > 127
    if union.all():
        raise UserError("--ignore covers the whole image: nothing would be left to inspect; paint only the regions to ignore white")
    return union


def _painted(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return binary_mask(image)
    except (OSError, UnidentifiedImageError):
        raise UserError(f"--ignore {path}: not an image Pillow can read; give a black-and-white PNG, white where to ignore") from None


def drawn_shapes(path: Path) -> Image.Image:
    """A LabelMe file's polygons and rectangles filled white on black, at its image's size."""
    fix = "give a black-and-white PNG, or LabelMe's JSON with polygon or rectangle shapes"
    try:
        drawn = json.loads(Path(path).read_text(encoding="utf-8"))
        size = (int(drawn["imageWidth"]), int(drawn["imageHeight"]))
        shapes = [(s.get("shape_type", "polygon"), [(float(x), float(y)) for x, y in s["points"]]) for s in drawn["shapes"]]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"--ignore {path}: not a LabelMe file (imageWidth, imageHeight and shapes with points); {fix}") from None
    unknown = sorted({kind for kind, points in shapes if kind not in ("polygon", "rectangle")})
    if unknown or not shapes or size[0] < 1 or size[1] < 1:
        raise UserError(f"--ignore {path}: {'shapes of type ' + ', '.join(unknown) if unknown else 'no shapes'}; {fix}")
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for kind, points in shapes:
        if kind == "rectangle" and len(points) == 2:
            (x0, y0), (x1, y1) = points
            draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], fill=255)
        elif kind == "polygon" and len(points) >= 3:
            draw.polygon(points, fill=255)
        else:
            raise UserError(f"--ignore {path}: a {kind} of {len(points)} points; {fix}")
    return mask


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
