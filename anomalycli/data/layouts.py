"""Where the images are: data-set layouts, samples, labels CSVs, manifests, images as tensors.

Every verb starts here. ``discover`` turns a folder (plus an optional labels CSV or
manifest) into a list of ``Sample``; ``image_batches`` decodes images into uint8 batches
(finding and decoding single files is ``images.py``).
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from anomalycli.data.images import (
    IMAGE_EXTENSIONS,
    MASK_FOLDERS,
    existing_folder,
    is_heatmap,
    is_image_file,
    is_mask,
    list_images,
    walk_files,
)
from anomalycli.errors import UserError

SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
DEFAULT_NORMAL_CLASS = "good"
# What lines call their good parts besides "good" (in any case): without --normal-class, the one
# class folder or label so named is the good parts' (OK/NG folders are the commonest on a line).
GOOD_NAMES = ("good", "ok", "normal", "pass", "passed", "io", "i.o.", "defect-free", "defect_free", "no-defect", "no_defect", "non-defective", "nondefective")
LABELS_HEADER = ("filename", "label")
MANIFEST_HEADER = ("path", "label", "defect_type")


@dataclass(frozen=True)
class Sample:
    path: Path
    class_name: str
    label: int  # 0 = normal, 1 = anomaly
    defect_type: str | None = None  # None for normal images
    split: str | None = None  # train | val | test, when the layout says so
    fold: int | None = None
    mask: Path | None = None


@dataclass
class Dataset:
    root: Path
    layout: str
    samples: list[Sample]
    normal_class: str
    skipped: list[Path] = field(default_factory=list)  # files that are not images

    def in_split(self, split: str) -> list[Sample]:
        return [s for s in self.samples if s.split == split]

    def fitting_pool(self) -> list[Sample]:
        """The images a fit draws on, training and validation together (never a test split's):
        what train splits, and what its decisions (method, input size, orientation, levels) see."""
        if self.in_split("val"):
            return self.in_split("train") + self.in_split("val")
        return self.in_split("train") or [s for s in self.samples if s.split is None]

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.samples if s.split})


def defect_type_from_name(stem: str) -> str | None:
    """``scratch_head001`` -> ``scratch_head``; a name that is only a number gives None."""
    match = re.match(r"^(.*?)[\s_\-.]*\d+$", stem)
    prefix = match.group(1) if match else stem
    return prefix or None


def _mask_index(root: Path) -> dict[tuple[tuple[str, ...], str], Path]:
    index = {}
    for name in MASK_FOLDERS:
        mask_root = root / name
        if mask_root.is_dir():
            for path in walk_files(mask_root):
                if is_image_file(path):
                    stem = _mask_stem(path)
                    index[(path.relative_to(mask_root).parent.parts, stem)] = path
    return index


def _mask_stem(path: Path) -> str:
    """The image stem a mask file belongs to: ``scratch001_mask.png`` and ``scratch001.png`` are ``scratch001``'s."""
    return path.stem.removesuffix("_mask")


def _find_mask(index, root: Path, path: Path) -> Path | None:
    folder = path.relative_to(root).parent.parts
    # Masks mirror the image tree, with or without its split folder (MVTec AD drops it).
    return index.get((folder, path.stem)) or index.get((folder[1:], path.stem))


def _class_folder(root, class_dir: Path, normal_class: str, split, masks) -> tuple[list[Sample], list[Path]]:
    class_name = class_dir.name
    label = int(class_name != normal_class)
    samples, skipped = [], []
    for path in walk_files(class_dir):
        if not is_image_file(path):
            skipped.append(path)
            continue
        if is_mask(path, root) or is_heatmap(path):
            continue
        defect = None
        if label:
            sub = path.relative_to(class_dir).parts
            defect = sub[0] if len(sub) > 1 else (defect_type_from_name(path.stem) or class_name)
        samples.append(Sample(path, class_name, label, defect, split, mask=_find_mask(masks, root, path)))
    return samples, skipped


# Words in a class name that say good parts ("gut (iO)", "OK parts", "01_good", "Gutteile"), and
# words that say the opposite or negate them ("not-good", "n.i.O.", "NOK", "bad_ok_mixed").
GOOD_WORDS = {"good", "ok", "okay", "normal", "pass", "passed", "io", "gut", "gutteil", "gutteile"}
NOT_GOOD_WORDS = {"not", "no", "non", "nicht", "n", "nio", "nok", "ng", "bad", "fail", "failed", "reject", "rejected", "defect", "defective", "defects"}
NOT_GOOD_WORDS |= {"schlecht", "ausschuss", "fehler", "anomaly", "anomalous", "scrap"}


def is_good_name(name: str) -> bool:
    """Whether a class name is one lines give good parts: one of ``GOOD_NAMES`` (in any case), or
    with a word of ``GOOD_WORDS`` and none of ``NOT_GOOD_WORDS`` (dots dropped: i.O. is io, n.i.O. nio)."""
    if name.lower() in GOOD_NAMES:
        return True
    words = set(re.split(r"[^0-9a-zäöüß]+", name.lower().replace(".", "")))
    return bool(words & GOOD_WORDS) and not words & NOT_GOOD_WORDS


def good_like(names) -> list[str]:
    """The class ``names`` that lines give good parts (``is_good_name``), sorted."""
    return sorted(name for name in set(names) if is_good_name(name))


def normal_class_among(names, given: str | None, model_class: str | None = None) -> str:
    """The class of good parts among the class ``names``: ``given`` where the user named it (in any
    case); else the model's (``model_class``, eval and calibrate) or "good", where a class is so
    named; else the one class named as lines call good parts (OK, normal, pass, iO, ...); else the
    model's or "good", which the verbs' errors then ask to name."""
    names = set(names)
    if given is not None:  # as written, or the one class that differs from it only in case (--normal-class ok for OK/)
        same = [name for name in names if name.lower() == given.lower()]
        return given if given in names or len(same) != 1 else same[0]
    fallback = model_class or DEFAULT_NORMAL_CLASS
    if fallback in names:
        return fallback
    alike = good_like(names)
    return alike[0] if len(alike) == 1 else fallback


def _taken_as_good(layout: str, normal_class: str, given: str | None) -> str:
    """The layout's description, saying which class was taken for the good parts where it was not asked for."""
    return layout if given is not None or normal_class == DEFAULT_NORMAL_CLASS else f"{layout}; good parts: {normal_class}"


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in MASK_FOLDERS)


UNLABELLED = "unlabelled"


def unlabelled(folder: str | Path) -> Dataset:
    """A folder of images without class folders or labels, as one group taken for goods: what
    ``inspect`` measures before the images are sorted (train never takes it so)."""
    images, skipped = list_images(folder)
    if not images:
        raise UserError(f"no images found in {folder}; supported files: {', '.join(sorted(IMAGE_EXTENSIONS))}")
    return Dataset(Path(folder), "a folder of unlabelled images", [Sample(path, UNLABELLED, 0) for path in images], UNLABELLED, skipped)


def discover(
    data: str | Path,
    normal_class: str | None = None,
    labels: str | Path | None = None,
    manifest: str | Path | None = None,
    model_class: str | None = None,
) -> Dataset:
    """Find the labelled images under ``data`` and say which layout they are in. ``normal_class``
    None: the good parts' class as ``normal_class_among`` finds it (``model_class``: the good
    class of the model that will judge them, first)."""
    root = existing_folder(data)
    if manifest is not None:
        return read_manifest(root, manifest, normal_class, model_class)
    if labels is not None:
        return read_labels_csv(root, labels, normal_class, model_class)

    masks = _mask_index(root)
    folders = _subfolders(root)
    split_folders = [f for f in folders if f.name.lower() in SPLIT_FOLDERS]
    if split_folders:
        layout = "MVTec AD (split folders with ground_truth masks)" if masks else "split folders (split/class/)"
        class_dirs = [(SPLIT_FOLDERS[split_dir.name.lower()], class_dir) for split_dir in split_folders for class_dir in _subfolders(split_dir)]
    elif folders:
        layout = "class folders (class/)"
        class_dirs = [(None, class_dir) for class_dir in folders]
    else:
        images, _ = list_images(root)
        if images:
            raise UserError(
                f"{root} holds images but no class folders; put them in {root}/{normal_class or DEFAULT_NORMAL_CLASS}/ and "
                f"{root}/<defect class>/, or pass --labels CSV with columns filename,label"
            )
        raise UserError(f"no images found in {root}; point DATA at the folder with the class folders")
    chosen = normal_class_among((class_dir.name for _, class_dir in class_dirs), normal_class, model_class)
    samples, skipped = [], []
    for split, class_dir in class_dirs:
        found, other = _class_folder(root, class_dir, chosen, split, masks)
        samples += found
        skipped += other
    if not samples:
        raise UserError(f"no images found in {root}; supported files: {', '.join(sorted(IMAGE_EXTENSIONS))}")
    return Dataset(root, _taken_as_good(layout, chosen, normal_class), samples, chosen, skipped)


# What a spreadsheet separates a CSV's cells with: commas, or the semicolons of locales whose
# decimal mark is a comma, or tabs. The header line tells which.
CSV_DELIMITERS = ",;\t"


def _read_csv(path: str | Path, required: tuple[str, ...], what: str) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist; check the path")
    try:
        text = _decoded(path.read_bytes())
        first = text.split("\n", 1)[0]
        delimiter = max(CSV_DELIMITERS, key=first.count) if any(d in first for d in CSV_DELIMITERS) else ","
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{what} {path} is not a readable CSV file ({exc})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise UserError(f"{what} {path} has header {','.join(header) or '(empty)'}; it needs the columns {','.join(required)}")
    if not rows:
        raise UserError(f"{what} {path} has a header but no rows")
    return rows


def _decoded(data: bytes) -> str:
    """A CSV's text: UTF-8 (with Excel's byte-order mark or without), else Excel's "CSV" on a
    Western European Windows (cp1252)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252")


def _sample_from_row(root: Path, rel: str, row: dict, normal_class: str, csv_path, line: int, masks) -> Sample:
    label_name = row["label"]
    if not label_name:
        raise UserError(f"{csv_path} line {line}: empty label for {rel}; every row needs a class name")
    # Lexically, '..' taken out: a file that is a link to images elsewhere (a data set gathered by
    # links, not copies) is still inside DATA where it lies.
    path = Path(os.path.normpath(root.absolute() / rel))
    if not path.is_relative_to(Path(os.path.normpath(root.absolute()))):
        raise UserError(f"{csv_path} line {line}: {rel} points outside {root}; paths must stay inside DATA")
    label = int(label_name != normal_class)
    defect = (row.get("defect_type") or defect_type_from_name(path.stem) or label_name) if label else None
    fold = row.get("fold")
    try:
        fold_number = int(fold) if fold not in (None, "") else None
    except ValueError:
        raise UserError(f"{csv_path} line {line}: fold {fold!r} is not a whole number") from None
    split = SPLIT_FOLDERS.get((row.get("split") or "").lower()) if row.get("split") else None
    if row.get("split") and split is None:
        raise UserError(f"{csv_path} line {line}: split {row['split']!r} is not one of train, val, test")
    sample_path = root / rel
    return Sample(sample_path, label_name, label, defect, split, fold_number, _find_mask(masks, root, sample_path))


def _samples_from_rows(root, rows, key, csv_path, normal_class, what) -> list[Sample]:
    masks = _mask_index(root)
    seen: dict[str, int] = {}
    samples, missing = [], []
    for line, row in enumerate(rows, start=2):
        rel = row[key]
        if "\\" in rel and not (root / rel).exists():  # written on Windows (good\a.png): its folders
            rel = rel.replace("\\", "/")
        if rel in seen:
            raise UserError(f"{csv_path} line {line}: {rel} is listed twice (first on line {seen[rel]}); keep one row per image")
        seen[rel] = line
        sample = _sample_from_row(root, rel, row, normal_class, csv_path, line, masks)
        if not sample.path.is_file():
            missing.append(rel)
            continue
        samples.append(sample)
    if missing:
        raise UserError(f"{what} {csv_path}: {len(missing)} listed file(s) are missing from {root}, first: {missing[0]}; fix the CSV or the DATA folder")
    if not any(s.label == 0 for s in samples):
        labels = sorted({s.class_name for s in samples})
        raise UserError(
            f"{csv_path} has no image labelled {normal_class!r} (labels found: {', '.join(labels)}); "
            "pass --normal-class NAME to say which label means a good part"
        )
    return samples


def read_labels_csv(root: Path, labels: str | Path, normal_class: str | None = None, model_class: str | None = None) -> Dataset:
    rows = _read_csv(labels, LABELS_HEADER, "labels CSV")
    chosen = normal_class_among((row["label"] for row in rows), normal_class, model_class)
    samples = _samples_from_rows(root, rows, "filename", labels, chosen, "labels CSV")
    return Dataset(root, _taken_as_good(f"flat folder with labels CSV {labels}", chosen, normal_class), samples, chosen)


def read_manifest(root: Path, manifest: str | Path, normal_class: str | None = None, model_class: str | None = None) -> Dataset:
    rows = _read_csv(manifest, MANIFEST_HEADER, "manifest")
    chosen = normal_class_among((row["label"] for row in rows), normal_class, model_class)
    samples = _samples_from_rows(root, rows, "path", manifest, chosen, "manifest")
    return Dataset(root, _taken_as_good(f"manifest {manifest}", chosen, normal_class), samples, chosen)


def write_manifest(path: str | Path, root: Path, samples: list[Sample], column: str, overwrite: bool = True) -> None:
    """Write ``path,label,defect_type,<column>`` with paths relative to ``root``; column is split or fold."""
    from anomalycli.files import atomic_path

    with atomic_path(path, overwrite) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow([*MANIFEST_HEADER, column])
            for s in samples:
                writer.writerow([s.path.relative_to(root).as_posix(), s.class_name, s.defect_type or "", getattr(s, column)])


def attach_masks(samples: list[Sample], mask_dir: str | Path) -> list[Sample]:
    """Give each sample the mask in ``mask_dir`` named ``<stem>_mask.*`` or ``<stem>.*``, if any."""
    mask_dir = existing_folder(mask_dir)
    by_stem = {}
    for path in walk_files(mask_dir):
        if is_image_file(path):
            stem = _mask_stem(path)
            by_stem.setdefault(stem, path)
    return [replace(s, mask=by_stem.get(s.path.stem, s.mask)) for s in samples]
