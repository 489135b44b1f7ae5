"""The ``anomaly`` command: one module per verb, each parsing options, calling the core, rendering.

A verb's module is imported when that verb runs, not before: ``anomaly predict`` then starts
without the imports only training needs (scikit-learn, torchvision; about 3 s of a 5 s start on 2 cores).
"""

from __future__ import annotations

import difflib
import importlib
from inspect import cleandoc

import typer
from typer.core import TyperCommand, TyperGroup

from anomalycli import __version__, runtime

# verb -> (module in anomalycli.cli, its command function, whether --ray takes an optional address)
VERBS = {
    "inspect": ("inspect", "inspect_command", False),
    "split": ("split", "split_command", False),
    "train": ("train", "train_command", True),
    "eval": ("evaluate", "eval_command", False),
    "predict": ("predict", "predict_command", True),
    "calibrate": ("calibrate", "calibrate_command", False),
    "adapt": ("adapt", "adapt_command", False),
    "export": ("export", "export_command", False),
    "review": ("review", "review_command", False),
    "watch": ("watch", "watch_command", False),
    "serve": ("serve", "serve_command", False),
    "station": ("station", "station_command", False),
    "cameras": ("cameras", "cameras_command", False),
}

# Each verb's line in `anomaly --help`: its command's first paragraph (tests/test_cli.py checks
# they agree), so that listing the verbs imports none of their modules.
SUMMARIES = {
    "inspect": "What is in a data set: counts, imbalance, defect types, sizes, unreadable files, duplicates.",
    "split": "Stratified (by class and defect type) train/validation split or k folds, as a manifest CSV.",
    "train": "Train a detector and calibrate its threshold; writes a run folder with model.safetensors.",
    "eval": "Confusion matrix, accuracy, precision, recall, F1, AUROC (with 95% CIs), recall per defect type.",
    "predict": "A score in [0, 1] and a verdict for every image; heat maps where the method has them.",
    "calibrate": "Move a trained model's operating point without refitting: a new model file; the old one is untouched.",
    "adapt": "Adapt a model to a changed line (light, focus, camera) with 5 to 50 of its good images, without refitting.",
    "export": "Write the model as one self-contained ONNX file for the line PC: no anomalycli or PyTorch needed there.",
    "review": "Look at what the model flagged in the browser, mark each image good or defective, and save it as a labels CSV.",
    "watch": "Judge every image that arrives in a folder, once, as it arrives; each verdict a row in a journal.",
    "serve": "Judge images sent over HTTP (POST /predict), with /health and Prometheus /metrics, the model kept loaded.",
    "station": "Run an inspection station a PLC talks to (Modbus TCP, OPC UA; MQTT out): recipes kept warm, a handshake that never shows a stale result.",
    "cameras": "List the GenICam cameras a GenTL producer sees: index, serial number, model, vendor.",
}


class Verbs(TyperGroup):
    """The verbs, each made into a command from its module when it is asked for."""

    _listing = False

    def format_help(self, ctx, formatter) -> None:
        # The list needs each verb's line only: importing every verb's module for it (training's
        # imports PyTorch and scikit-learn) made `anomaly --help` take 6-8 s on 2 cores.
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def list_commands(self, ctx) -> list[str]:
        return list(VERBS)

    def resolve_command(self, ctx, args):
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in VERBS and (close := difflib.get_close_matches(name, VERBS, n=1)):
            ctx.fail(f"No such command {name!r}. Did you mean {close[0]!r}?")
        return super().resolve_command(ctx, args)

    def get_command(self, ctx, name: str):
        if name not in VERBS:
            return None
        if self._listing:
            return TyperCommand(name, help=SUMMARIES[name])
        module, function, optional_ray = VERBS[name]
        command = getattr(importlib.import_module(f"anomalycli.cli.{module}"), function)
        verb = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        if optional_ray:
            from anomalycli.cli.common import OptionalRayAddress

            verb.command(name, cls=OptionalRayAddress)(command)
        else:
            verb.command(name)(command)
        return _help_as_written(typer.main.get_command(verb))


def _help_as_written(command):
    """A command's help texts shown as their docstrings write them, at any terminal's width.

    Rich reads "[classifier]" or "[source.camera]" as a style and drops it from ``--help``: the
    brackets are escaped. Typer keeps every line break of a paragraph after the first, so a
    paragraph wrapped at the source's width broke again at the terminal's: its lines are joined
    (a blank line still parts two paragraphs).
    """
    from rich.markup import escape

    for item in (command, *command.params):
        if getattr(item, "help", None):
            paragraphs = cleandoc(item.help).split("\n\n")
            item.help = escape("\n\n".join(" ".join(paragraph.split("\n")) for paragraph in paragraphs))
    return command


app = typer.Typer(
    cls=Verbs,
    help="Find defective parts in images: inspect a data set, split it, train a detector, evaluate it, predict.",
    epilog=(
        "In a project folder that holds data/: anomaly inspect, anomaly train, anomaly eval, anomaly predict FOLDER. "
        "Each run is saved as runs/train-N; eval and predict use the newest one unless MODEL or --model names another."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"anomaly {__version__}")
        raise typer.Exit()


@app.callback()
def _verbs(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print anomalycli's version and exit."),
) -> None:
    """Find defective parts in images: inspect a data set, split it, train a detector, evaluate it, predict."""


def main() -> None:
    runtime.idle_threads_sleep()
    runtime.keep_memory_flat()
    app(prog_name="anomaly")
