import json
import os
import re
import stat

from conftest import one_clear_line, run_cli

from anomalycli.data.layouts import Sample
from anomalycli.deploy.scoring import Scored
from anomalycli.views.report import GalleryItem, gallery


def test_gallery_lists_every_mistake_farthest_first_then_the_closest_calls(tmp_path):
    def row(label, score):
        sample = Sample(tmp_path / f"{label}-{score}.png", "bad" if label else "good", label)
        return sample, Scored(sample.path, score, score, "anomaly" if score >= 0.5 else "normal")

    pairs = [row(1, 0.1), row(1, 0.45), row(1, 0.55), row(1, 0.9), row(0, 0.8), row(0, 0.6), row(0, 0.4), row(0, 0.05)]
    items = gallery([s for s, _ in pairs], [r for _, r in pairs], 0.5, closest=1)
    assert [(i.kind, i.scored.score) for i in items] == [
        ("missed defect", 0.1),
        ("missed defect", 0.45),
        ("false alarm", 0.8),
        ("false alarm", 0.6),
        ("closest call (defect)", 0.55),
        ("closest call (good)", 0.4),
    ]
    assert isinstance(items[0], GalleryItem) and abs(items[0].distance - 0.4) < 1e-12


def test_eval_report_is_offline_complete_and_agrees_with_json(parts, patchcore_model, tmp_path, monkeypatch):
    folder, metrics = tmp_path / "report", tmp_path / "m.json"
    args = ["eval", patchcore_model, parts, "--json", metrics, "--report", folder, "--threshold", "0.6"]
    monkeypatch.setattr("sys.argv", ["anomaly", *map(str, args)])  # what a shell would have given
    result = run_cli(*args)
    assert "report written to" in result.output
    page = (folder / "index.html").read_text()
    report = json.loads(metrics.read_text())
    embedded = json.loads(re.search(r'<script type="application/json" id="metrics">(.*?)</script>', page, re.S).group(1))
    assert embedded == report
    for value in (report["auroc"], report["f1"], report["operating_point"]["recall"]):
        assert f"{value:.3f}" in page
    sources = re.findall(r'src="([^"]+)"', page)
    assert {"roc.png", "precision_recall.png", "scores.png"} <= set(sources)
    assert all((folder / src).is_file() for src in sources)
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "@import" not in page
    mistakes = report["confusion_matrix"]["fn"] + report["confusion_matrix"]["fp"]
    assert page.count('class="missed"') + page.count('class="alarm"') == mistakes
    assert len([s for s in sources if s.startswith("gallery/")]) >= mistakes + 2
    assert f"anomaly eval {patchcore_model}" in page and str(parts) in page
    assert "Trade-off on these images" in page and f"{report['trade_off'][0]['threshold']:.3f}" in page


def test_report_never_replaces_a_folder_unasked(parts, patchcore_model, tmp_path):
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    message = one_clear_line(run_cli("eval", patchcore_model, parts, "--report", folder, expect=1))
    assert "--overwrite" in message and (folder / "keep.txt").read_text() == "mine"
    run_cli("eval", patchcore_model, parts, "--report", folder, "--overwrite")
    assert (folder / "index.html").is_file() and not (folder / "keep.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_report_folder_gets_the_mode_mkdir_gives_not_a_temporary_folders_private_one(parts, patchcore_model, tmp_path):
    old = os.umask(0o022)
    try:
        run_cli("eval", patchcore_model, parts, "--report", tmp_path / "report")
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report").stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o755
