"""The benchmark is not a test, but its --quick mode runs here so the script cannot rot."""

import subprocess
import sys
from pathlib import Path

from anomalycli.synthetic import make_dataset

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def test_quick_benchmark_runs_on_a_tiny_synthetic_set(tmp_path):
    data = make_dataset(tmp_path / "tiny", n_good=12, n_per_defect=3, size=64, seed=0)
    out = tmp_path / "BENCH.md"
    result = subprocess.run([sys.executable, str(BENCH), "--quick", "--data", str(data), "--out", str(out), "--peer-python", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = out.read_text()
    assert "## Accuracy" in report and "## Speed" in report
    assert "image AUROC" in report and "images/s" in report
    assert "leave one type out" in report and "| patchcore lite0 224px c0.01 |" in report
    assert "fit on 64 good images" in report and "predict 64 images" in report
    assert "anomalib peer skipped" in report


def test_quick_operating_point_benchmark_reports_the_threshold_and_its_transfer(tmp_path):
    data = make_dataset(tmp_path / "tiny", n_good=16, n_per_defect=4, size=48, seed=0)
    out, raw = tmp_path / "OP.md", tmp_path / "op.json"
    script = BENCH.parent / "operating_point.py"
    result = subprocess.run([sys.executable, str(script), "--quick", "--data", str(data), "--methods", "patchcore", "--out", str(out), "--json", str(raw)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = out.read_text()
    assert "## Operating point" in report and "| tiny (33 % defects) | patchcore |" in report
    assert "balanced (default)" in report and "Leave-one-type-out" in report
    import json

    (run,) = json.loads(raw.read_text())
    assert len(run["cv"]) == 2 and {f["kind"] for f in run["loto"]} == {"scratch", "spot"}
    for fold in run["cv"]:
        assert 0 <= fold["measured"]["recall"] <= 1 and fold["best"]["balanced_accuracy"] >= fold["measured"]["balanced_accuracy"] - 1e-9


def test_engines_benchmark_times_each_stage_int8_and_fp32_and_a_baseline_revision(tmp_path):
    data = make_dataset(tmp_path / "tiny", n_good=8, n_per_defect=2, size=48, seed=0)
    out = tmp_path / "ENGINES.md"
    script = BENCH.parent / "engines.py"
    result = subprocess.run([sys.executable, str(script), "--data", str(data), "--images", "4", "--image-size", "64", "--repeats", "1",
                             "--baseline", "HEAD", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = out.read_text()
    for row in ("decode + resize alone", "PyTorch fp32, batch norm folded", "the model's int8 graph", "bank search and score alone, float32",
                "whole `anomaly predict` process, default", "the baseline revision's code", "fit on DATA, fp32"):
        assert row in report
    assert "default / the baseline revision's default" in report and "default / the raw PyTorch fp32 forward" in report


def test_quick_precision_benchmark_compares_int8_with_fp32_on_held_out_folds(tmp_path):
    data = make_dataset(tmp_path / "tiny", n_good=16, n_per_defect=4, size=48, seed=0)
    out = tmp_path / "PRECISION.md"
    result = subprocess.run([sys.executable, str(BENCH.parent / "precision.py"), "--quick", "--data", str(data), "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = out.read_text()
    assert "| tiny | int8 backbone, bfloat16 search (default) |" in report and "| tiny | fp32 backbone, float32 search (before) |" in report
    import json

    (run,) = json.loads(out.with_suffix(".json").read_text())
    assert len(run["folds"]) == 2 and all(0.0 <= fold["int8"]["auroc"] <= 1.0 for fold in run["folds"])


def test_heads_benchmark_compares_descriptors_and_one_class_weights_for_unseen_types(tmp_path):
    data = make_dataset(tmp_path / "tiny", n_good=15, n_per_defect=5, size=48, seed=0)
    script = BENCH.parent / "heads.py"
    result = subprocess.run([sys.executable, str(script), "--data", str(data), "--backbone", "efficientnet_lite0", "--size", "64", "--flips"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| tiny: head | head alone AUROC | fused with patchcore (weight 0.5) |" in result.stdout
    assert "| stride 16 + 32 (shipped), C=0.1 |" in result.stdout and "| patchcore alone |" in result.stdout
    assert "| scratch |" in result.stdout and "| spot |" in result.stdout and "one-class weight 0.5" in result.stdout
    assert "| shipped + h/v/hv flips in training and at test time |" in result.stdout


def test_quick_shift_benchmark_shifts_the_line_warns_and_adapts(tmp_path):
    data = make_dataset(tmp_path / "tiny", n_good=40, n_per_defect=6, size=64, seed=0)
    raw = tmp_path / "shift.json"
    result = subprocess.run([sys.executable, str(BENCH.parent / "shift.py"), "--quick", "--data", str(data), "--json", str(raw)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| exposure | mild (0.6) |" in result.stdout and "after adapt 5: false alarms / announced upper / recall" in result.stdout
    import json

    (run,) = json.loads(raw.read_text())
    exposure = next(row for row in run["shifts"] if row["shift"] == "exposure")
    assert exposure["drift_rate_50"]["0"] == 1.0  # a 40 % darker line is always noticed
    assert set(exposure["adapted"]) == {"5"} and 0 <= exposure["adapted"]["5"]["fpr"] <= 1
    assert set(run["unshifted"]["drift_rate"]) == {f"{n}@{s:g}" for n in (20, 50, 200) for s in (0.0, 0.1, 0.3)}
