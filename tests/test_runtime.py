import os
import subprocess
import sys

from anomalycli import runtime


def test_the_anomaly_command_imports_no_pytorch_before_it_sets_its_thread_policy():
    # OpenMP reads OMP_WAIT_POLICY once, when PyTorch loads it: set after that, it does nothing.
    code = "import sys, anomalycli.cli; assert 'torch' not in sys.modules, 'torch imported at start'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_idle_threads_sleep_unless_the_user_chose_otherwise(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    runtime.idle_threads_sleep()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    runtime.idle_threads_sleep()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_predict_starts_decoding_before_pytorch_loads():
    # anomaly predict lists its images and starts decoding them (anomalycli.data.decoding) before
    # importing PyTorch: everything its module imports must leave PyTorch out.
    code = "import sys, anomalycli.cli.predict; assert 'torch' not in sys.modules, 'torch imported by predict before decoding starts'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_progress_bar_is_drawn_on_a_terminal_only():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for file, shown, drawn in ((io.StringIO(), True, False), (Terminal(), True, True), (Terminal(), False, False)):
        with runtime.progress_bar(total=3, desc="scoring", file=file, shown=shown) as bar:
            bar.update(3)
        assert ("scoring" in file.getvalue()) == drawn
