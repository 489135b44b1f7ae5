"""Regenerate BENCHMARKS.md: every topic measured from scratch, then the report written from the results.

python -m benchmarks                         # every topic on screws and magtiles (about three hours on 2 cores)
python -m benchmarks --topics speed,shift    # some topics; the report keeps the others' last results
python -m benchmarks --report-only           # rewrite BENCHMARKS.md from benchmarks/results/
python -m benchmarks --quick --data DIR --results /tmp/r --out /tmp/B.md   # a smoke run (about 10 minutes on 2 cores)
python -m benchmarks --avx2-only --topics speed   # as an AVX2-only CPU runs it, here (hidden_isa.py)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import warnings
from pathlib import Path

from anomalycli import runtime

runtime.idle_threads_sleep()  # before PyTorch is imported, as the anomaly command does: the stages are timed as predict runs them

from benchmarks import (  # noqa: E402
    accuracy,
    camera,
    few_shot,
    hidden_isa,
    ignore,
    line,
    localisation,
    peer,
    precision,
    precision_shift,
    report,
    resolution,
    scale,
    shift,
    speed,
    station,
)
from benchmarks.common import DATA, REPO, compile_bytecode  # noqa: E402


def measure(topic: str, args, log) -> dict:
    """Run one topic on the data sets; what its section and headline rows are written from."""
    if topic == "accuracy":
        return accuracy.run(args.data, args.quick, log=log)
    if topic == "precision":
        reused = json.loads((args.results / "precision.json").read_text())["result"] if args.reuse_fp32_fits else None
        return precision.run(args.data, args.quick, log=log, reused=reused)
    if topic == "speed":
        return speed.run(args.data, args.quick, baseline=args.baseline, log=log)
    if topic == "ignore":
        return ignore.run(args.data, args.quick, log=log)
    if topic == "resolution":
        return resolution.run(args.data, args.quick, log=log)
    if topic == "localisation":
        return localisation.run(args.data, args.quick, log=log)
    if topic == "line":
        return line.run(args.data, args.quick, log=log)
    if topic == "station":
        return station.run(args.data, args.quick, log=log)
    if topic == "camera":
        return camera.run(args.data[0], args.quick, log=log)
    if topic == "scale":
        return scale.run(args.data[0], args.quick, args.scale_sizes, log=log)
    if topic == "peer":
        return peer.run(args.data[0], args.peer_python, args.quick, log=log)
    if topic == "few_shot":
        return {"runs": [few_shot.run(data, args.quick, log=log) for data in args.data]}
    if topic == "precision_shift":
        reused = json.loads((args.results / "precision_shift.json").read_text())["result"] if args.reuse_fp32_fits else None
        return {"runs": [precision_shift.run(data, args.quick, log=log, reused=reused) for data in args.data]}
    return {"runs": [shift.run(data, args.quick, log=log) for data in args.data]}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--topics", default=",".join(report.TOPICS), help=f"comma-separated, of {', '.join(report.TOPICS)} (default: all)")
    parser.add_argument("--data", type=Path, action="append", help="labelled data set folder (repeatable; default: screws and magtiles)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small subsets, 2 folds, tiny images")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results", help="where each topic's results are kept")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="the report to write")
    parser.add_argument("--report-only", action="store_true", help="measure nothing; write the report from --results")
    parser.add_argument(
        "--keep-other-data",
        action="store_true",
        help="with --data: keep the last results of the data sets not measured (a change that moves one set's figures only)",
    )
    parser.add_argument(
        "--reuse-fp32-fits", action="store_true", help="precision, precision_shift: keep the last run's fp32 fits (for a change to the int8 path only)"
    )
    parser.add_argument(
        "--avx2-only", action="store_true", help="run with AVX-512, VNNI and AMX hidden from every process: an AVX2-only CPU's kernels, here (hidden_isa.py)"
    )
    parser.add_argument("--baseline", default=None, help="speed: also time the whole predict with the code of this git revision (before/after a change)")
    parser.add_argument("--scale-sizes", type=int, nargs="+", default=None, help=f"scale: training images (default {' '.join(map(str, scale.SIZES))})")
    parser.add_argument(
        "--peer-python",
        type=Path,
        default=Path(os.environ.get("ANOMALIB_PYTHON", peer.DEFAULT_PYTHON)),
        help="peer: the Python of a virtual environment with anomalib (default $ANOMALIB_PYTHON, else ../peer-venv/bin/python)",
    )
    args = parser.parse_args(argv)
    args.topics = [t.strip() for t in args.topics.split(",") if t.strip()]
    unknown = [t for t in args.topics if t not in report.TOPICS]
    if unknown:
        parser.error(f"--topics: unknown {', '.join(unknown)}; choose from {', '.join(report.TOPICS)}")
    if args.avx2_only and (other := [t for t in args.topics if t not in report.PER_CPU]):
        parser.error(f"--avx2-only measures the topics kept a run per CPU class ({', '.join(report.PER_CPU)}), not {', '.join(other)}")
    args.data = [d.resolve() for d in (args.data or DATA)]
    missing = [str(d) for d in args.data if not d.is_dir()]
    if missing and not args.report_only:
        parser.error(f"--data: no such folder {', '.join(missing)}")
    return args


def _shown(data: Path) -> str:
    """A data set's folder as the command line names it: beside the repository's development sets
    as ``../shared/data/NAME``, elsewhere its own path."""
    shared = (REPO.parent / "shared" / "data").resolve()
    return f"../shared/data/{data.name}" if data.parent == shared else shlex.quote(str(data))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.avx2_only and not hidden_isa.active():
        why = hidden_isa.refused()
        problem = f"--avx2-only: the kernel refused CPUID faulting ({why})" if why else hidden_isa.problem()
        if problem is not None:
            print(problem, file=sys.stderr)
            return 2
        hidden_isa.run_hidden(argv)
    if not args.report_only:
        runtime.keep_memory_flat()  # as the anomaly command does
        compile_bytecode(REPO / "anomalycli")
        logging.getLogger("anomalycli").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore")
        command = "python -m benchmarks" + (f" --topics {','.join(args.topics)}" if len(args.topics) < len(report.TOPICS) else "")
        command += "".join(f" {shlex.quote(a)}" for a in argv if a in ("--quick", "--reuse-fp32-fits", "--keep-other-data", "--avx2-only"))
        command += "".join(f" --data {_shown(d)}" for d in args.data) if args.data != [d.resolve() for d in DATA] else ""
        for topic in args.topics:
            if topic == "peer" and not args.peer_python.exists():
                print(f"peer: skipped, no Python at {args.peer_python} (--peer-python names one with anomalib)", flush=True)
                continue
            print(f"{topic}", flush=True)
            result = measure(topic, args, log=lambda line: print(line, flush=True))
            if args.keep_other_data and "runs" in result:
                report.save_keeping_other_data(args.results, topic, result, command)
            else:
                report.save(args.results, topic, result, command)
            report.write(args.results, args.out)  # a long run that stops early keeps what it finished
    report.write(args.results, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
