"""Image files: finding them (a folder, a list of paths) and decoding them to pixels.

No PyTorch here: ``anomaly predict`` lists and starts decoding its images (``decoding.py``) while
PyTorch is still being imported. ``load_image`` reads any common image file into RGB;
``read_image_array`` is the fast path every verb reads model inputs through.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from anomalycli.data.bit_depth import OWN_SCALES, ValueWindow, Windows
from anomalycli.data.framing import SQUASH, framed
from anomalycli.errors import UserError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
MASK_FOLDERS = {"ground_truth", "masks"}


class ImageError(UserError):
    """An image file that cannot be used; the message names the file."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def is_mask(path: Path, root: Path | None = None) -> bool:
    parts = path.relative_to(root).parts if root else path.parts
    return path.stem.endswith("_mask") or any(p in MASK_FOLDERS for p in parts[:-1])


def binary_mask(image: Image.Image) -> Image.Image:
    """A mask of any mode as 'L', 255 where it marks and 0 elsewhere: above half its brightest value,
    in its brightest channel. So a 0/1 mask (a bool array saved as it is, a palette's index 1), a
    16-bit one and one drawn in colour (red on black, luminance 76) mark as 0/255 ones do."""
    values = np.asarray(image.convert("L") if image.mode == "1" else image)
    if values.ndim == 3:
        values = values[..., :3].max(axis=-1)  # any colour channel lit; an alpha channel is no mark
    top = values.max(initial=0)
    return Image.fromarray(np.where(values > top / 2, 255, 0).astype(np.uint8) if top else np.zeros(values.shape, np.uint8), "L")


# A station archive's heat map lies beside its image under this suffix (deploy/archive.py): a
# search for images never takes it for a part's.
HEATMAP_SUFFIX = ".heatmap.png"


def is_heatmap(path: Path) -> bool:
    return path.name.lower().endswith(HEATMAP_SUFFIX)


# A file in a folder of heat maps anomalycli wrote: a search for images below a folder above it
# skips that folder, or a second predict over a folder would judge the first's heat maps as parts.
HEATMAPS_MARKER = ".anomalycli-heatmaps"


def walk_files(folder: Path) -> list[Path]:
    """All files under ``folder``, sorted, but for folders of anomalycli's own heat maps below it
    (``HEATMAPS_MARKER``); follows symlinks but never loops."""
    seen: set[str] = set()
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not os.path.exists(os.path.join(dirpath, d, HEATMAPS_MARKER)))
        files += [Path(dirpath) / f for f in sorted(filenames)]
    return files


def list_images(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """Images under ``folder`` (recursive, masks left out) and the other files skipped."""
    folder = existing_folder(folder)
    images, skipped = [], []
    for path in walk_files(folder):
        if not path.is_file() and not path.is_symlink():
            continue
        if is_image_file(path):
            if not is_mask(path, folder) and not is_heatmap(path):
                images.append(path)
        else:
            skipped.append(path)
    return images, skipped


# A SOURCE that is a file lists the images to score, one path a line.
PATH_LIST_SUFFIXES = (".txt", ".lst")


def list_source(source: str | Path) -> tuple[list[Path], list[Path], Path]:
    """The images a SOURCE names, the non-image files skipped, and the folder their paths are
    relative to: one image file, a folder (searched as ``list_images``) or a text file of paths,
    one a line.

    A list keeps its order and repeats; relative lines are relative to the list's folder, blank
    lines and lines starting with ``#`` are skipped, and a listed file that is missing or not an
    image is kept, to be reported as unreadable like any other.
    """
    source = Path(source)
    if source.is_file() and is_image_file(source):
        return [source], [], source.parent
    if source.is_file():
        if source.suffix.lower() not in PATH_LIST_SUFFIXES:
            raise UserError(f"{source} is not an image; give an image, a folder of images or a .txt list of image paths, one a line")
        try:
            lines = source.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark (Notepad) is no part of a path
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read the path list {source} ({type(exc).__name__}); it must be UTF-8 text, one path a line") from None
        base = source.parent
        paths = [base / line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        return paths, [], base
    images, skipped = list_images(source)
    return images, skipped, source


def existing_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{folder} does not exist; check the path")
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; pass the folder that holds the images")
    return folder


# --- reading pixels -------------------------------------------------------------------


def load_image(path: str | Path, windows: Windows = OWN_SCALES) -> Image.Image:
    """Open any common image file as RGB with its EXIF orientation applied (a 16-bit or float one
    read on the model's ``windows``, ``bit_depth.py``)."""
    return to_rgb(open_image(path), windows)


def open_image(path: str | Path, draft_size: int | None = None, data: bytes | None = None) -> Image.Image:
    """Decode an image file (or, given ``data``, those bytes, ``path`` then only naming them) in its
    own mode, EXIF orientation applied; any failure is one ImageError line."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as image:
                if draft_size:
                    image.draft(None, (draft_size, draft_size))  # a no-op for formats other than JPEG
                image.load()
                image = ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: image is too large to open safely (over {Image.MAX_IMAGE_PIXELS:,} pixels); downscale it first") from None
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied; make the file readable") from None
    except UnidentifiedImageError:
        head = data[:4] if data is not None else _first_bytes(path, 4)
        problem = (
            "empty file (0 bytes)"
            if not head
            # Pillow opens grey float TIFFs but no colour float (or other multi-sample float) one
            else "a TIFF Pillow cannot decode (a colour float one?); save it as 8- or 16-bit colour, or as one float channel"
            if head in TIFF_SIGNATURES
            else "not an image Pillow can read"
        )
        raise ImageError(f"{path}: {problem}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: damaged or truncated image ({exc})") from None
    return image


TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")


def _first_bytes(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(n)
    except OSError:
        return b""


def original_size(path: Path, data: bytes | None = None) -> tuple[int, int] | None:
    """(width, height) of an image file (or of the bytes ``data``), from its header, EXIF rotation
    applied; None where unreadable."""
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as image:
            width, height = image.size
            rotated = _orientation(image) in (5, 6, 7, 8)
    except (OSError, ValueError):
        return None
    return (height, width) if rotated else (width, height)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 where none) of an opened image, from what opening it read.
    Pillow's ``getexif`` of a PNG without an eXIf chunk before its pixels decodes every pixel to
    look for one after them: 11 ms a 1024 px camera image, as long as the decoding itself, and
    predict asked it of every image (BENCHMARKS.md, Speed). The PNG standard puts eXIf before the
    image data; one after it is not looked for here."""
    if image.format == "PNG":
        exif = Image.Exif()
        if image.info.get("exif"):
            exif.load(image.info["exif"])
        return exif.get(0x0112, 1)
    return image.getexif().get(0x0112, 1)


def to_rgb(image: Image.Image, windows: Windows = OWN_SCALES) -> Image.Image:
    return to_grey_or_rgb(image, windows).convert("RGB")


def to_grey_or_rgb(image: Image.Image, windows: Windows = OWN_SCALES) -> Image.Image:
    """Any Pillow mode as 'L' (grey) or 'RGB', the same way: 16-bit and float images are scaled, not
    clipped, on the model's ``windows`` (``bit_depth.py``); a float one where it has none (a model
    from before them) from 0..1, 0..255 or 0..65535, by its own largest value."""
    if image.mode.startswith("I;16"):
        image = Image.fromarray(windows.sixteen_bit.to_grey(np.asarray(image)), "L")
    elif image.mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        window = windows.floats or ValueWindow(0.0, own_scale_top(image.mode, float(np.nanmax(array)) if not np.isnan(array).all() else 0.0))
        image = Image.fromarray(window.to_grey(array), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    if image.mode in ("L", "RGB"):
        return image
    return image.convert("L" if image.mode == "1" else "RGB")


def own_scale_top(mode: str, largest: float) -> float:
    """The value a 32-bit integer or float image's white is, chosen per file from its largest value:
    1 (a float image on the 0..1 scale, a normalised export, is not a black one), 255 or 65535."""
    if mode == "F" and largest <= 1.0:
        return 1.0
    return 65535.0 if largest > 255 else 255.0


def read_image_array(path: str | Path, image_size: int, data: bytes | None = None, framing: str = SQUASH, windows: Windows = OWN_SCALES) -> np.ndarray:
    """The file at ``path`` (or the bytes ``data``, which ``path`` names) as uint8 RGB pixels
    (S, S, 3), ready for a model of input size ``image_size`` that frames images so (``framing.py``).

    A JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale still at least ``image_size``, and a
    grey image is resized before it becomes RGB (a third of the work).
    """
    return resized_array(open_image(path, draft_size=image_size, data=data), image_size, framing, windows)


def resized_array(image: Image.Image, image_size: int, framing: str = SQUASH, windows: Windows = OWN_SCALES) -> np.ndarray:
    """Image of any mode -> uint8 RGB pixels (S, S, 3), resized with antialiasing and framed."""
    return framed(to_grey_or_rgb(image, windows), image_size, framing)
