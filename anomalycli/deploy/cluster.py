"""predict and fit on a Ray cluster: the same units of work as one process, run by Ray.

predict streams the image paths through Ray Data to a pool of scoring actors. Each actor loads
the model once from one copy in Ray's object store (the file is put there once, not per batch)
and reads its images itself, so the paths must be readable on every node (a shared or mounted
folder). Rows come back in any order and are put back in the order of the paths.

fit cuts the work where one process already cuts it: features are embedded in runs of
``patchcore.EMBED_BATCH`` images, each fold's coreset in the sampler's parts, and the
out-of-fold scores in runs of ``patchcore.SCORE_BATCH`` images of one fold. Each unit is a Ray
task on the same tensors as in one process, so the same data, seed and parts give the same model
(tested). The features stay in the object store where they were made; this machine gets only
each fold's coreset and the scores.

Ray retries the work of a worker that died: Ray Data restarts a scoring actor and re-runs its
batch (its default), and a fit task runs again up to ``MAX_RETRIES`` times. A run that still
cannot finish (or whose code fails) raises one ``UserError`` naming what is missing, and the
caller writes nothing.
"""

from __future__ import annotations

import logging
import math
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from anomalycli.data import decoding
from anomalycli.deploy.scoring import Scored, score_batch, scored_row
from anomalycli.detection.coreset import SAMPLERS
from anomalycli.detection.methods import patchcore
from anomalycli.errors import UsageError, UserError
from anomalycli.judgement import drift

INSTALL_HINT = 'pip install "anomalycli[ray]"'
LOCAL = "local"  # --ray without an address: a Ray instance on this machine, started and stopped here
MAX_RETRIES = 3
# Images per embedding task and per scoring task of a fit: multiples of the one-process batches,
# large enough that a task's start (a second or so) is small against its work.
EMBED_CHUNK = 8 * patchcore.EMBED_BATCH
SCORE_CHUNK = 8 * patchcore.SCORE_BATCH


def _ray():
    try:
        import ray
    except ImportError:
        raise UsageError(f"--ray needs Ray, which is not installed; run: {INSTALL_HINT}") from None
    return ray


def is_address(word: str) -> bool:
    """``local``, ``auto``, or anything with a colon (HOST:PORT, ray://HOST:PORT)."""
    return word in (LOCAL, "auto") or ":" in word


def check_address(address: str) -> None:
    """Refuse an address that is none (such as ``--ray=images``), and a missing Ray, in one line."""
    _ray()
    if not is_address(address):
        raise UsageError(f"--ray {address}: not a cluster address; give --ray alone (this machine), --ray auto or --ray HOST:PORT")


def connect(address: str = LOCAL):
    """The ``ray`` module, connected: to a running instance if there is one in this process, else to
    ``address`` (``local`` starts one on this machine)."""
    check_address(address)
    ray = _ray()
    if not ray.is_initialized():
        _check_reachable(address)
        try:
            if address == LOCAL:
                ray.init(include_dashboard=False, logging_level=logging.ERROR)
            else:
                ray.init(address=address, logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise _unreachable(address, str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__) from None
    import ray.data  # sets up its logging as it is imported

    # Ray Data logs each run's plan, and a failed run's traces, to the console as well as to its log
    # files: the console gets our progress bar and one line instead; /tmp/ray/session_latest/logs keeps all.
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.CRITICAL)
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT nothing answers on is one line in seconds; Ray itself would retry for minutes."""
    if address in (LOCAL, "auto"):
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise _unreachable(address, f"{type(exc).__name__}: {exc}") from None


def _unreachable(address: str, reason: str) -> UserError:
    return UserError(f"cannot reach a Ray cluster at {address} ({reason}); start one with 'ray start --head' or check the address")


def workers(ray) -> int:
    """One worker per CPU of the cluster: each runs one image at a time on one core."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


# --- predict ----------------------------------------------------------------------------------


class _Scorer:
    """A Ray Data actor: the model, loaded once from the object store, scoring batches of paths."""

    def __init__(self, model_ref: list, name: str, engine: str, n_images: int):
        import ray

        from anomalycli.deploy.engines import describe, load_model, on_engine

        with tempfile.TemporaryDirectory(prefix="anomalycli-") as folder:  # loaded whole, then removed
            path = Path(folder) / name
            path.write_bytes(ray.get(model_ref[0]))
            self.model, note = on_engine(load_model(path, engine), engine, n_images, with_maps=False)
        # Where the model runs and, where that is not its fast path, why: the lines predict prints, one string per row.
        self.engine_note = "\n".join([f"runs on: {describe(self.model)}", *([note] if note else [])])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [Path(p) for p in batch["path"]]
        # The batch is decoded here, in the actor, as one batch without worker processes.
        images, _, errors = next(decoding.batches(paths, self.model.config["image_size"], len(paths), workers=0))
        raw, _ = score_batch(self.model, images, errors)
        return {
            "index": batch["index"],
            "raw": raw,
            "score": np.asarray(self.model.calibration.normalise(raw), dtype=np.float64),
            "error": np.array(errors, dtype=object),
            "stats": drift.image_stats(images),  # for the drift check, as scoring.iter_scores
            "engine_note": np.array([self.engine_note] * len(paths), dtype=object),
        }


def score_paths(
    ray, model_path: Path, paths: list[Path], engine: str = "auto", threshold: float = 0.5, batch_size: int = 32, show_progress: bool = True
) -> tuple[list[Scored], list[str]]:
    """One ``Scored`` per path, in the order of ``paths``, scored on the cluster ``ray`` is connected
    to, and the workers' lines on the engine they ran (``engines.on_engine``; each once)."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # one bar, ours, counts the rows as they come back
    items = [{"index": i, "path": str(p)} for i, p in enumerate(paths)]
    model_ref = ray.put(Path(model_path).read_bytes())
    scored = ray.data.from_items(items).map_batches(
        _Scorer,
        fn_constructor_args=([model_ref], Path(model_path).name, engine, len(paths)),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(workers(ray), math.ceil(len(paths) / batch_size))),
        num_cpus=1,
    )
    rows: dict[int, Scored] = {}
    notes: dict[str, None] = {}  # in the order they came
    try:
        with tqdm(total=len(paths), desc="scoring on Ray", unit="img", disable=not show_progress) as bar:
            for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
                for index, raw, score, error, stats in zip(batch["index"], batch["raw"], batch["score"], batch["error"], batch["stats"]):
                    rows[int(index)] = scored_row(paths[index], float(raw), float(score), str(error), threshold, stats=stats)
                notes.update(dict.fromkeys(line for lines in batch["engine_note"] for line in str(lines).split("\n")))
                bar.update(len(batch["index"]))
    except Exception as exc:  # Ray raises its own kinds once its retries are spent
        missing = [p for i, p in enumerate(paths) if i not in rows]
        raise UserError(
            f"the Ray run stopped ({_reason(exc)}): {len(missing)} of {len(paths)} images were not scored "
            f"(first: {missing[0] if missing else '-'}); nothing was written (Ray's logs: /tmp/ray/session_latest/logs)"
        ) from None
    return [rows[i] for i in range(len(paths))], list(notes)


def _reason(exc: Exception) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1][:160]}" if text else type(cause).__name__


# --- fit ----------------------------------------------------------------------------------------


def _embed_task(extractor, paths: list, image_size: int, with_descriptors: bool) -> tuple[np.ndarray, tuple]:
    """The chunk's patch features (they stay in the object store) and what this machine needs of
    them: readable indices, errors, patches per image and the (small) descriptors."""
    features, descriptors, stats, readable, errors = patchcore.embed_images(extractor, paths, image_size, num_workers=0, with_descriptors=with_descriptors)
    return features.numpy(), (readable, errors, features.shape[1] if readable else 0, descriptors, stats)


def _rows(parts: list) -> torch.Tensor:
    """Features of some images, gathered from the chunks that hold them: [(chunk ref, rows)]."""
    import ray

    chunks = ray.get([ref for ref, _ in parts])
    return torch.from_numpy(np.concatenate([chunk[rows] for chunk, (_, rows) in zip(chunks, parts)]))


def _coreset_task(sampler, parts: list, start: int, stop: int) -> torch.Tensor:
    patches = _rows(parts)
    patches = patches.reshape(-1, patches.shape[-1])[start:stop]
    return patches[sampler.run_part(patches)].float()


def _score_task(extractor, bank: torch.Tensor, reweight: bool, parts: list) -> torch.Tensor:
    return patchcore.score_all(patchcore.PatchCore(extractor, bank, reweight=reweight), _rows(parts).float())


@dataclass
class RayFeatures:
    """Patch features of a fit's readable images, held in Ray's object store in chunks.

    ``where[k]`` is the (chunk, row) of the k-th readable image. The methods are those of
    ``patchcore.LocalFeatures``, run unit for unit as Ray tasks; the descriptors, a few KB an
    image, come to this machine.
    """

    ray: object
    extractor_ref: object
    chunks: list
    where: np.ndarray
    patches_per_image: int
    descriptors: torch.Tensor | None = None
    stats: np.ndarray | None = None  # the images' drift.image_stats, as LocalFeatures

    @classmethod
    def embed(
        cls, ray, extractor, paths: list[Path], image_size: int, show_progress: bool = False, with_descriptors: bool = False
    ) -> tuple["RayFeatures", list[int], list[str]]:
        """Embed ``paths`` in chunks of ``EMBED_CHUNK``; the readable indices and errors as ``embed_images``."""
        extractor_ref = ray.put(extractor.cpu())
        starts = range(0, len(paths), EMBED_CHUNK)
        task = ray.remote(num_cpus=1, num_returns=2, max_retries=MAX_RETRIES)(_embed_task)
        refs = [task.remote(extractor_ref, paths[s : s + EMBED_CHUNK], image_size, with_descriptors) for s in starts]
        _wait(
            ray,
            [meta for _, meta in refs],
            "features",
            show_progress,
            lambda i: f"{len(paths[starts[i] : starts[i] + EMBED_CHUNK])} images from {paths[starts[i]]} on were not embedded",
        )
        readable, errors, where, per_image, descriptors, stats = [], [], [], 0, [], []
        for c, (start, (_, meta)) in enumerate(zip(starts, refs)):
            rows, chunk_errors, chunk_per_image, chunk_descriptors, chunk_stats = ray.get(meta)
            stats.append(chunk_stats)
            readable += [start + r for r in rows]
            errors += chunk_errors
            where += [(c, k) for k in range(len(rows))]
            per_image = per_image or chunk_per_image
            if chunk_descriptors is not None:
                descriptors.append(chunk_descriptors)
        where = np.array(where, dtype=np.int64).reshape(-1, 2)
        described = torch.cat(descriptors) if descriptors else None
        chunks = [features for features, _ in refs]
        return cls(ray, extractor_ref, chunks, where, per_image, described, np.concatenate(stats)), readable, errors

    def _parts(self, images: np.ndarray) -> list:
        """[(chunk ref, rows)] of the readable images ``images`` (indices in fit order), in their order."""
        parts = []
        for chunk in dict.fromkeys(self.where[images, 0].tolist()):
            rows = self.where[images][self.where[images, 0] == chunk, 1]
            parts.append((self.chunks[chunk], rows))
        return parts

    def fold_coresets(
        self, labels: torch.Tensor, folds: np.ndarray, coreset_ratio: float, sampler: str = "greedy", seed: int = 0, show_progress: bool = False
    ) -> dict:
        """One coreset of each fold's good patches: one task per part of the sampler's."""
        run = SAMPLERS[sampler](coreset_ratio, seed=seed)
        task = self.ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_coreset_task)
        per_image, good = self.patches_per_image, labels.numpy() == 0
        refs, names = {}, []
        for fold in np.unique(folds).tolist():
            index = np.flatnonzero((folds == fold) & good)
            bounds = run.part_bounds(len(index) * per_image)
            for part, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
                first, last = a // per_image, math.ceil(b / per_image)
                offset = first * per_image
                refs.setdefault(fold, []).append(task.remote(run, self._parts(index[first:last]), a - offset, b - offset))
                names.append(f"coreset part {part + 1} of fold {fold + 1}")
        flat = [r for parts in refs.values() for r in parts]
        _wait(self.ray, flat, "coreset", show_progress, lambda i: f"{names[i]} did not finish")
        return {fold: torch.cat(self.ray.get(parts)) for fold, parts in refs.items()}

    def out_of_fold_scores(self, folds: np.ndarray, coresets: dict, reweight: bool = False, show_progress: bool = False) -> torch.Tensor:
        """Every image scored by the bank of the other folds: one task per ``SCORE_CHUNK`` images of a fold."""
        task = self.ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_score_task)
        refs, scored_index = [], []
        for fold in np.unique(folds).tolist():
            bank = self.ray.put(torch.cat([coreset for f, coreset in coresets.items() if f != fold]))
            scored = np.flatnonzero(folds == fold)
            for s in range(0, len(scored), SCORE_CHUNK):
                refs.append(task.remote(self.extractor_ref, bank, reweight, self._parts(scored[s : s + SCORE_CHUNK])))
                scored_index.append(scored[s : s + SCORE_CHUNK])
        _wait(self.ray, refs, "scores", show_progress, lambda i: f"the out-of-fold scores of {len(scored_index[i])} images did not finish")
        scores = torch.empty(len(folds))
        for index, values in zip(scored_index, self.ray.get(refs)):
            scores[index] = values
        return scores


def _wait(ray, refs: list, desc: str, show_progress: bool, missing: Callable[[int], str]) -> None:
    """Wait for every task, counting them on a bar; a task that failed past its retries is one UserError."""
    position = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    with tqdm(total=len(refs), desc=f"{desc} on Ray", unit="task", disable=not show_progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done)
            except Exception as exc:  # Ray raises its own kinds once its retries are spent
                raise UserError(f"the Ray fit stopped ({_reason(exc)}): {missing(position[done[0]])}; no model was written") from None
            bar.update(len(done))
