"""A project folder's conventions: its data in ``./data``, its runs in ``./runs/train-N``.

They let a user type the short forms (``anomaly train``, ``anomaly predict FOLDER``) in the
folder that holds ``data/``; every rule here is one a verb can be told to skip with an argument.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from anomalycli import files
from anomalycli.errors import UsageError, UserError

DEFAULT_DATA = Path("data")
RUNS = Path("runs")
RUN_PREFIX = "train"
MODEL_NAME = "model.safetensors"
ARGS_NAME = "args.json"  # what made the run's model: train's options, or what calibrate or adapt started from


def resolve_data(data: str | Path | None) -> tuple[Path, bool]:
    """The DATA folder to use and whether it was the ``./data`` default."""
    if data is not None:
        return Path(data), False
    if DEFAULT_DATA.is_dir():
        return DEFAULT_DATA, True
    raise UsageError(f"give the DATA folder, or create {DEFAULT_DATA}/ here (the folder used when DATA is left out)")


def run_number(run_dir: Path) -> int | None:
    match = re.fullmatch(rf"{RUN_PREFIX}-(\d+)", run_dir.name)
    return int(match.group(1)) if match else None


def newest_model(runs: str | Path = RUNS) -> Path:
    """``runs/train-N/model.safetensors`` with the largest N that holds a model (by N, not file time)."""
    runs = Path(runs)
    numbered = [(run_number(d), d) for d in runs.iterdir() if d.is_dir()] if runs.is_dir() else []
    finished = [(n, d) for n, d in numbered if n is not None and (d / MODEL_NAME).is_file()]
    if not finished:
        raise UserError(f"no trained model in {runs}/ yet; train one first (anomaly train DATA) or pass --model PATH")
    return max(finished)[1] / MODEL_NAME


def model_file(path: str | Path) -> Path:
    """A model path as the user gave it: a run folder means the model file inside it."""
    path = Path(path)
    if path.is_dir():
        if not (path / MODEL_NAME).is_file():
            raise UserError(
                f"{path} is a folder without {MODEL_NAME}"
                + (" (a run that was interrupted or failed)" if is_run_folder(path) else "")
                + "; pass a run folder that train finished, or the model file"
            )
        return path / MODEL_NAME
    return path


def is_run_folder(path: Path) -> bool:
    """A folder train, calibrate or adapt made (its ``args.json``), finished or not: given alone,
    it is the model the user meant, so one that holds none is said as such, not searched for images."""
    return path.is_dir() and (path / ARGS_NAME).is_file()


def is_model_path(path: Path) -> bool:
    return path.suffix in (".safetensors", ".onnx") or (path.is_dir() and (path / MODEL_NAME).is_file())


def model_and_target(args: list[Path], model: Path | None, target: str) -> tuple[Path, Path | None, bool]:
    """Split ``[MODEL] TARGET`` positional arguments and ``--model``: (model file, target, newest run used).

    The target is None when it was left out, for the verb to default or ask for. One argument
    that is a model (a ``.safetensors`` file or a finished run folder) is the model, since a
    model is never what a verb scores or evaluates.
    """
    if len(args) > 2:
        raise UsageError(f"too many arguments: give [MODEL] {target}")
    if len(args) == 2 or (len(args) == 1 and (is_model_path(args[0]) or is_run_folder(args[0]))):
        if model is not None:
            raise UsageError(f"give the model once: either --model or MODEL before {target}")
        return model_file(args[0]), (args[1] if len(args) == 2 else None), False
    chosen = args[0] if args else None
    if model is not None:
        return model_file(model), chosen, False
    return newest_model(), chosen, True


def write_args(run_dir: Path, args: dict) -> None:
    """``args.json`` in ``run_dir``: what made the model saved there."""
    files.write_text(run_dir / ARGS_NAME, json.dumps(args, indent=2))


def new_run(args: dict) -> Path:
    """A new ``runs/train-N`` folder holding ``args.json`` (calibrate and adapt without --out)."""
    run_dir = files.new_run_dir(RUNS, RUN_PREFIX)
    write_args(run_dir, args)
    return run_dir
