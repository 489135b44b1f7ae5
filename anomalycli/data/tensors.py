"""Samples' pixels as PyTorch tensors: whole sets for a fit (``load_all``), batches decoded ahead
(``image_batches``), masks, and a file's digest. The layouts that find the samples are ``layouts.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anomalycli.data.bit_depth import OWN_SCALES, Windows
from anomalycli.data.decoding import DecodeAhead, batches
from anomalycli.data.framing import SQUASH, framed
from anomalycli.data.images import ImageError, binary_mask, read_image_array, resized_array
from anomalycli.data.layouts import Sample


def load_mask(path: Path, size: int) -> torch.Tensor:
    with Image.open(path) as mask:
        mask = binary_mask(mask).resize((size, size), Image.NEAREST)
        return torch.from_numpy(np.array(mask) > 127)


def load_framed_mask(path: Path, size: int, framing: str) -> np.ndarray:
    """A defect mask (bool S x S) in the frame the model's input has (``framing.framed``: a
    letterboxed mask is mirrored at its edges as the image is)."""
    with Image.open(path) as mask:
        return framed(binary_mask(mask), size, framing)[..., 0] > 127


def image_batches(
    paths: list[Path],
    image_size: int,
    batch_size: int = 32,
    num_workers: int | None = None,
    decoded: DecodeAhead | None = None,
    framing: str = SQUASH,
    windows: Windows = OWN_SCALES,
):
    """``decoding.batches`` as tensors: (uint8 images B x 3 x S x S, indices into ``paths``, errors) per batch."""
    for images, indices, errors in batches(paths, image_size, batch_size, num_workers, decoded, framing, windows):
        yield torch.from_numpy(images), torch.from_numpy(indices), errors


def read_image_tensor(path: str | Path, image_size: int, framing: str = SQUASH, windows: Windows = OWN_SCALES) -> torch.Tensor:
    """The file at ``path`` as a uint8 tensor (3, S, S), as ``images.read_image_array`` reads it."""
    return torch.from_numpy(read_image_array(path, image_size, framing=framing, windows=windows)).permute(2, 0, 1)


def image_to_tensor(image: Image.Image, image_size: int) -> torch.Tensor:
    """Image of any mode -> uint8 RGB tensor (3, S, S), resized with antialiasing."""
    return torch.from_numpy(resized_array(image, image_size)).permute(2, 0, 1)


def load_all(samples: list[Sample], image_size: int, framing: str = SQUASH, windows: Windows = OWN_SCALES) -> tuple[torch.Tensor, list[Sample], list[str]]:
    """Decode and resize every sample once: (uint8 N x 3 x S x S, samples kept, errors of those dropped)."""
    tensors, kept, errors = [], [], []
    for sample in samples:
        try:
            tensors.append(read_image_tensor(sample.path, image_size, framing, windows))
            kept.append(sample)
        except ImageError as exc:
            errors.append(str(exc))
    stacked = torch.stack(tensors) if tensors else torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8)
    return stacked, kept, errors
