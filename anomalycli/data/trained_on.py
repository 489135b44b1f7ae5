"""Which images a model was trained on, known by their content.

A model scores the images it was fitted on better than new ones (PatchCore's bank holds their
patches; a classifier has learnt them), so figures measured on them are optimistic and a
threshold chosen on their scores sits too low for new parts. ``train`` keeps a short digest of
every image it read in the model's config, ``adapt`` adds its new images'; ``eval`` says when
it is given such images and ``calibrate`` leaves them out.

A digest is the first 16 hex digits of the file's sha256: a copy or a renamed file is still
known, a re-encoded one is not. A model file from before keeps no record, and nothing is said.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from anomalycli import files
from anomalycli.data.layouts import Sample

KEY = "trained_on"
DIGEST_HEX = 16


def digest(path: str | Path) -> str | None:
    """The file's content digest; None for a file that cannot be read."""
    try:
        return files.file_sha256(path)[:DIGEST_HEX]
    except OSError:
        return None


def _digests(paths: Iterable[str | Path]) -> set[str]:
    """The digests of the files that can be read."""
    return {d for d in map(digest, paths) if d}


def recorded(config: dict, paths: Iterable[str | Path]) -> dict:
    """``config`` with the digests of ``paths`` as its record of the images trained on."""
    return {**config, KEY: sorted(_digests(paths))}


def added(config: dict, paths: Iterable[str | Path]) -> dict:
    """``config`` with the digests of ``paths`` added to its record; a config that keeps no record
    stays so (its training images are unknown, and a record of the new ones alone would miss them)."""
    if KEY not in config:
        return config
    return {**config, KEY: sorted(set(config[KEY]) | _digests(paths))}


def seen(config: dict, paths: Iterable[str | Path]) -> list[bool] | None:
    """For each path, whether the model was trained on that image; None where the model keeps
    no record."""
    if KEY not in config:
        return None
    known = set(config[KEY])
    return [digest(p) in known for p in paths]


def not_trained_on(config: dict, samples: list[Sample]) -> tuple[list[Sample], int]:
    """The samples the model was not trained on, in order, and how many were left out."""
    was_seen = seen(config, [s.path for s in samples]) or [False] * len(samples)
    kept = [s for s, was in zip(samples, was_seen) if not was]
    return kept, len(samples) - len(kept)


def seen_message(n_seen: int, images: int) -> str | None:
    """What eval says when it is given images the model was trained on; None when none were."""
    if not n_seen:
        return None
    how_many = f"all {images}" if n_seen == images else f"{n_seen} of the {images}"
    return (
        f"the model was trained on {how_many} images evaluated here: it has seen them, so the figures on them are optimistic; "
        "on new parts expect the calibration's point, and measure it on images held out (anomaly split --test-ratio 0.2, then train and eval with --manifest split.csv)"
    )
