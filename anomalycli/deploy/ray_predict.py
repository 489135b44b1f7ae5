"""predict streams the image paths through Ray Data to a pool of scoring actors. Each actor loads
the model once from one copy in Ray's object store (the file is put there once, not per batch)
and reads its images itself, so the paths must be readable on every node (a shared or mounted
folder). Rows come back in any order and are put back in the order of the paths.

Ray Data restarts a scoring actor that died and re-runs its batch (its default); a run that still
cannot finish raises one ``UserError`` naming the images left, and the caller writes nothing."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from anomalycli.data import decoding
from anomalycli.data.bit_depth import windows_of
from anomalycli.data.framing import framing_of
from anomalycli.deploy.ray_cluster import _reason, workers
from anomalycli.deploy.scoring import Scored, score_batch, scored_row
from anomalycli.errors import UserError
from anomalycli.judgement import drift
from anomalycli.runtime import progress_bar


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
        images, _, errors = next(
            decoding.batches(
                paths,
                self.model.config["image_size"],
                len(paths),
                workers=0,
                framing=framing_of(self.model.config),
                windows=windows_of(self.model.config),
            )
        )
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
        with progress_bar(total=len(paths), desc="scoring on Ray", unit="img", shown=show_progress) as bar:
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
