"""What every verb shares: user errors become one line and an exit code; logs go to stderr."""

from __future__ import annotations

import errno
import functools
import logging
import shlex
import sys
from pathlib import Path

import typer
from rich.logging import RichHandler
from typer.core import TyperCommand

from anomalycli import project
from anomalycli.cli.render import err_console
from anomalycli.data.layouts import Dataset, discover, good_like
from anomalycli.deploy import engine_choice, ray_cluster
from anomalycli.errors import UsageError, UserError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
ENGINE_HELP = (
    f"Where the model runs: {', '.join(engine_choice.ENGINES)} (auto: the model's int8 backbone where it has one, "
    f"else ONNX Runtime for {engine_choice.AUTO_ONNX_MIN_IMAGES} images or more; torch: PyTorch, an int8 backbone still on "
    "ONNX Runtime; onnx-fp32: fp32 models only)."
)

NORMAL_CLASS_HELP = (
    "Class name of good parts; every other class is an anomaly (default: good, else the one class named OK, normal, pass, iO or the like, in any case)."
)


# The operating-point options of the verbs that choose a threshold again (calibrate, adapt).
TARGET_RECALL = typer.Option(None, "--target-recall", help="Catch at least this share of the defects (e.g. 0.95).")
MAX_FPR = typer.Option(None, "--max-fpr", help="Flag at most this share of good parts (e.g. 0.01).")
DEFECT_RATE = typer.Option(None, "--defect-rate", help="The largest F1 at this defect rate on the line (e.g. 0.05).")


RAY_HELP = (
    "Run on a Ray cluster: --ray alone starts Ray on this machine; --ray auto joins the cluster this machine "
    'belongs to; --ray HOST:PORT (or ray://HOST:PORT) names one. Needs: pip install "anomalycli[ray]".'
)


class OptionalRayAddress(TyperCommand):
    """A command whose ``--ray`` takes an optional ADDRESS (a Click option takes a value or none, not either)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, with_ray_address(args))


def with_ray_address(args: list[str]) -> list[str]:
    """``args`` with ``local`` after a bare ``--ray``: one that is last, or before another option or a
    word that is no address (such as a folder). An address is ``local``, ``auto`` or holds a colon."""
    given = []
    for i, arg in enumerate(args):
        given.append(arg)
        following = args[i + 1] if i + 1 < len(args) else None
        if arg == "--ray" and (following is None or not _is_address(following)):
            given.append("local")
    return given


def _is_address(word: str) -> bool:
    # A Windows path (C:\images) has a colon too: a word that names a file or folder is none.
    return ray_cluster.is_address(word) and not word.startswith("-") and not Path(word).exists()


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return f"[yellow]warning:[/yellow] {message}" if record.levelno >= logging.WARNING else message


def _setup_logging() -> None:
    logger = logging.getLogger("anomalycli")
    if not logger.handlers:
        handler = RichHandler(console=err_console, show_time=False, show_level=False, show_path=False, markup=True)
        handler.setFormatter(_OneLine())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def fail(message: str, code: int = EXIT_FAILURE) -> typer.Exit:
    err_console.print(f"[bold red]error:[/bold red] {message}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


def command_line() -> str:
    """The command as the user typed it, for reports to say what made them."""
    return shlex.join(["anomaly", *sys.argv[1:]])


def check_threshold(threshold: float | None) -> float:
    """The decision threshold on the calibrated 0..1 scale: the option's value or the model's 0.5."""
    if threshold is None:
        return 0.5
    if not 0 <= threshold <= 1:
        raise UsageError(f"--threshold is on the 0..1 score scale (got {threshold})")
    return threshold


def data_folder(data: Path | None) -> Path:
    """DATA as given, or ./data when it was left out (said on stderr, so JSON on stdout stays clean)."""
    data, defaulted = project.resolve_data(data)
    if defaulted:
        err_console.print(f"data: ./{data} (no DATA given)", highlight=False)
    return data


def model_and_target(args: list[Path] | None, model: Path | None, target: str) -> tuple[Path, Path | None]:
    """``[MODEL] TARGET`` and ``--model``: the model file (the newest run's when none is named) and the target."""
    path, chosen, newest = project.model_and_target(list(args or []), model, target)
    if newest:
        err_console.print(f"model: {path} (the newest run; --model PATH picks another)", highlight=False)
    return path, chosen


# The disk or the system refusing a write (full, over quota, read-only, not allowed) is the user's to
# mend, found mid-work: one line, as a mistake is; every output was being written atomically.
WRITE_REFUSED = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def user_errors(command):
    """Turn a ``UserError`` into 'error: ...' and its exit code; Ctrl-C into exit 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _setup_logging()
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            raise fail(str(exc).replace("[", r"\["), exc.exit_code) from None
        except OSError as exc:
            if exc.errno not in WRITE_REFUSED:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            message = f"{exc.strerror}{where}: nothing half-written was kept; free space or choose a path this user can write to"
            raise fail(message.replace("[", r"\["), 1) from None
        except KeyboardInterrupt:
            raise fail("interrupted", EXIT_INTERRUPTED) from None

    return wrapper


def is_folder_of_images(data: Path) -> bool:
    """A folder with no subfolders (images alone, unlabelled), as against class folders."""
    return data.is_dir() and not any(p.is_dir() and not p.name.startswith(".") for p in data.iterdir())


def data_for_model(data, model_config: dict, normal_class: str | None = None, labels=None, manifest=None) -> Dataset:
    """DATA's labelled images as a model judges them: its good parts in ``normal_class`` where
    given, else in the model's own good class where DATA has one, else as ``discover`` finds them
    (a model trained on good/ measured on a line's OK/NG folders), which is then said."""
    dataset = discover(data, normal_class, labels, manifest, model_class=model_config["normal_class"])
    said = None
    if normal_class is None and dataset.normal_class != model_config["normal_class"]:
        said = f"good parts: {dataset.normal_class} in {data} (the model's own were named {model_config['normal_class']!r})"
    alike = good_like(s.class_name for s in dataset.samples)
    if normal_class is None and not any(s.label == 0 for s in dataset.samples) and alike:
        said = (
            f"warning: no image of the good parts' class {dataset.normal_class!r} in {data}, every image counted a defect, "
            f"though {' and '.join(alike)} look like good parts: pass --normal-class NAME"
        )
    if said:
        err_console.print(said, highlight=False, markup=False, soft_wrap=True)
    return dataset


def require_model_file(model_path: Path, verb: str) -> None:
    """One line refusing an exported ``.onnx`` file where ``verb`` needs the model file it came from."""
    if model_path.suffix.lower() == ".onnx":
        raise UsageError(f"{model_path.name} is already an ONNX export; {verb} the .safetensors model it came from (then export it again)")


def say_line(text: str) -> None:
    """One plain, unbuffered line on stdout, for the resident verbs (watch, serve, station): a line
    program reads them as they come (Rich would wrap them)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
