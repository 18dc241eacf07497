"""A healthy `mtrec run` is quiet: no traceback from any process (TF 2.16's AtomicFunction
teardown errors in the Beam workers included) and one line per training epoch, as a user's
shell sees it (the console script in a subprocess, on a few thousand synthetic rows)."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from mtrec import quiet
from tests.support.synthetic import make_interactions_csv

EPOCHS = 2
EPOCH_LINE = re.compile(r"^INFO mtrec[\w.]*: epoch (\d+)/(\d+)  loss=\S+  val_selection_loss=")


def user_environment() -> dict[str, str]:
    """This environment less what the test session or an in-process CLI run may have set,
    so the subprocess starts as from a user's shell."""
    dropped = {"TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS", quiet.ENV_MARK}
    return {key: value for key, value in os.environ.items() if key not in dropped}


def test_a_healthy_run_prints_no_traceback_and_one_line_per_epoch(tmp_path):
    data = make_interactions_csv(tmp_path / "interactions.csv", n_rows=3000)
    mtrec = Path(sys.executable).parent / "mtrec"
    command = [str(mtrec), "run", "--output-dir", str(tmp_path / "out")]
    command += ["--interactions", str(data), "--epochs", str(EPOCHS)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=user_environment(),
        timeout=900,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    assert "Traceback" not in output, output[-5000:]
    assert "AtomicFunction" not in output, output[-5000:]
    epochs = [m.groups() for m in map(EPOCH_LINE.match, output.splitlines()) if m]
    assert epochs == [(str(i), str(EPOCHS)) for i in range(1, EPOCHS + 1)], output[-5000:]
    assert not re.search(r"\d+/\d+ - \d+m?s - ", output), "Keras's own epoch line is shown"
    assert "Pipeline run " in done.stdout
    assert re.search(r"^Model (BLESSED|NOT blessed)", done.stdout, re.MULTILINE), done.stdout


def test_beam_workers_hide_the_teardown_errors_only_when_the_parent_asked():
    """What a Beam worker does with --beam_plugin=mtrec.quiet: import it, then exit with an
    AtomicFunction.__del__ TypeError left over (raised here from a stand-in class)."""
    worker = textwrap.dedent(
        """
        import mtrec.quiet

        REFS = None  # As TF's module global is when __del__ runs at interpreter teardown.

        class AtomicFunction:
            def __del__(self):
                REFS["f"] -= 1

        AtomicFunction()
        """
    )

    def stderr(env: dict[str, str]) -> str:
        run = subprocess.run(
            [sys.executable, "-c", worker], capture_output=True, text=True, env=env, timeout=60
        )
        assert run.returncode == 0, run.stderr
        return run.stderr

    assert "AtomicFunction.__del__" in stderr(user_environment())
    assert stderr({**user_environment(), quiet.ENV_MARK: "1"}) == ""
