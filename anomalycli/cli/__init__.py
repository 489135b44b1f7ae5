"""The ``anomaly`` command: one module per verb, each parsing options, calling the core, rendering."""

from __future__ import annotations

import typer

from anomalycli import runtime
from anomalycli.cli import adapt, calibrate, evaluate, export, inspect, predict, split, train
from anomalycli.cli.common import OptionalRayAddress

app = typer.Typer(
    help="Find defective parts in images: inspect a data set, split it, train a detector, evaluate it, predict.",
    epilog=(
        "In a project folder that holds data/: anomaly inspect, anomaly train, anomaly eval, anomaly predict FOLDER. "
        "Each run is saved as runs/train-N; eval and predict use the newest one unless MODEL or --model names another."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("inspect")(inspect.inspect_command)
app.command("split")(split.split_command)
app.command("train", cls=OptionalRayAddress)(train.train_command)
app.command("eval")(evaluate.eval_command)
app.command("predict", cls=OptionalRayAddress)(predict.predict_command)
app.command("calibrate")(calibrate.calibrate_command)
app.command("adapt")(adapt.adapt_command)
app.command("export")(export.export_command)


def main() -> None:
    runtime.keep_memory_flat()
    app(prog_name="anomaly")
