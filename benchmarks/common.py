"""What every topic shares: the data sets, the shipped options, timing, memory and formatting."""

from __future__ import annotations

import compileall
import contextlib
import csv
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from anomalycli.data import splits
from anomalycli.data.layouts import Sample, discover
from anomalycli.workflows import train

REPO = Path(__file__).resolve().parents[1]
DATA = [REPO.parent / "shared" / "data" / name for name in ("screws", "magtiles")]
CAMERA = {"screws": REPO.parent / "shared" / "data" / "screws-1024" / "good"}  # a set's images at the camera's own resolution, where there are such
QUICK_MAX_IMAGES = 60  # --quick works on a stratified subset this large, so the smoke test stays short


def samples_of(data: Path, quick: bool) -> list[Sample]:
    samples = discover(data).samples
    return subsample(samples, QUICK_MAX_IMAGES) if quick and len(samples) > QUICK_MAX_IMAGES else samples


def subsample(samples: list[Sample], n: int, seed: int = 0) -> list[Sample]:
    """A stratified (class and defect type) subset of ``n`` samples, in their original order."""
    from sklearn.model_selection import train_test_split

    try:
        keep, _ = train_test_split(list(range(len(samples))), train_size=n, random_state=seed, stratify=splits.strata(samples))
    except ValueError:  # a stratum too small to split: by class only
        keep, _ = train_test_split(list(range(len(samples))), train_size=n, random_state=seed, stratify=[s.label for s in samples])
    return [samples[i] for i in sorted(keep)]


QUICK_IMAGE_SIZE = 64  # --quick fits every model at this size


def shipped_options(data: Path, samples: list[Sample], method: str = train.AUTO, quick: bool = False, **changes) -> train.TrainOptions:
    """What ``anomaly train DATA --method METHOD`` fits on a CPU (auto: what it picks for ``samples``), with ``changes``."""
    if quick:
        changes.setdefault("image_size", QUICK_IMAGE_SIZE)
    options = train.TrainOptions(data=str(data), method=method, device="cpu", **changes)
    if options.method == train.AUTO:
        options.method = train.choose_method(samples, options.cv_folds)
    options.validate()  # fills in the method's default backbone and image size
    return options


def median_time(fn, repeats: int, warm_up: bool = True, clock=time.perf_counter) -> float:
    """The median seconds of ``fn()`` on ``clock``: wall time, or ``time.process_time`` for the CPU time of every thread of this process."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def interleaved_median_times(fns: dict, rounds: int) -> dict:
    """``median_time`` of each of ``fns``, timed in turn round after round: a burst of noise on
    this machine then lands on all of them alike, not on whichever ran during it (one backbone
    timed alone took 33 and 46 ms an image in two runs, another 28 and 24)."""
    for fn in fns.values():
        fn()
    times = {key: [] for key in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def compile_bytecode(package: Path) -> None:
    """Write ``package``'s bytecode, as an installed package has it: whole processes are timed as
    a user's start, and where PYTHONDONTWRITEBYTECODE is set (this project's machines) an
    editable install would compile every module at every start (50 ms of a one-image predict)."""
    compileall.compile_dir(str(package), quiet=1)


def anomaly_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "anomalycli", *args]


def predict_commands(models: dict, samples: list, folder: Path) -> dict[str, list[str]]:
    """For each model (name -> an in-memory model), saved into ``folder`` as train saves it, a whole
    ``anomaly predict`` of ``samples``' files (listed in one file) that writes its rows over its last run's."""
    from anomalycli.deploy import export

    listing = folder / "images.txt"
    listing.write_text("\n".join(str(s.path) for s in samples) + "\n")
    commands = {}
    for name, model in models.items():
        path = export.save_model(model, folder / f"{name}.safetensors")
        commands[name] = anomaly_command("predict", str(path), str(listing), "--output", str(folder / f"{name}.csv"), "--overwrite")
    return commands


# Runs a command and prints the peak resident memory of the largest process it waited for, in KiB,
# and the CPU seconds, user and system, of every process under it that ended (decoding workers too).
_MEASURED = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "used = resource.getrusage(resource.RUSAGE_CHILDREN); print(used.ru_maxrss, used.ru_utime + used.ru_stime)"
)


def run_measured(command: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB of its largest process) of one whole command."""
    seconds, peak, _ = run_measured_with_cpu(command, cwd, env)
    return seconds, peak


def run_measured_with_cpu(command: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[float, float, float]:
    """``run_measured``'s wall seconds and peak RSS, and the CPU seconds of the command's processes together."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURED, *command], capture_output=True, text=True, cwd=cwd, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    peak, cpu = done.stdout.split()[-2:]
    return seconds, int(peak) / 1024, float(cpu)


def interleaved_process_seconds(commands: dict, repeats: int, each_round=None) -> dict:
    """(median wall seconds, peak RSS MiB, median CPU seconds) of each of ``commands`` (name -> (command,
    cwd, env)), each a whole process started cold, run in turn repeat after repeat: the ratios between
    them then hold while the machine's speed drifts (by a fifth between three runs in one day).
    ``each_round()``, where given, runs before each round's commands: a measurement in this process
    that the processes' times are compared with."""
    runs = {name: [] for name in commands}
    for _ in range(repeats):
        if each_round is not None:
            each_round()
        for name, (command, cwd, env) in commands.items():
            runs[name].append(run_measured_with_cpu(command, cwd, env))
    return {
        name: (statistics.median(r[0] for r in measured), max(r[1] for r in measured), statistics.median(r[2] for r in measured))
        for name, measured in runs.items()
    }


def machine() -> str:
    import platform

    import torch

    from anomalycli.deploy.engine_choice import cpu_class
    from benchmarks import hidden_isa

    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), platform.machine())
    cpu_class_shown = f"{cpu_class()}; {hidden_isa.CPU_CLASS_NOTE}" if hidden_isa.active() else cpu_class()
    return (
        f"{cpu} ({cpu_class_shown}), {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def mean(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else None


def pm(values, digits: int = 3) -> str:
    """'mean ± std' of the values that are not None."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{np.mean(values):.{digits}f} ± {std:.{digits}f}"


def fmt(value, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def percent(value, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f} %"


def wait_until(condition, timeout: float, step: float = 0.005) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step)
    return condition()


def csv_rows(path: Path) -> list[dict]:
    """A CSV's rows (a journal's), none where it does not exist yet."""
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def rss_mib(pid: int) -> float:
    """A process's resident memory now, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def runs_table(runs: list[dict]):
    """A markdown table with a column per data set's run: its lines, and ``row(what, cell)``, which
    adds the row ``what`` of ``cell(run)`` for each run."""
    lines = ["| | " + " | ".join(r["data"] for r in runs) + " |", "| --- |" + " --- |" * len(runs)]

    def row(what: str, cell) -> None:
        lines.append(f"| {what} | " + " | ".join(cell(r) for r in runs) + " |")

    return lines, row


@contextlib.contextmanager
def worktree_of(revision: str, path: Path):
    """A git worktree of ``revision`` at ``path`` while the block runs, for before/after ratios."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), revision], check=True, capture_output=True)
    compile_bytecode(path / "anomalycli")
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True)
