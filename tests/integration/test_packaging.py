"""What `pip install .` puts into site-packages: the one package mtrec, nothing else at the top
level, with every room (module files and the curated schema included) under it."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _source_tree(target: Path) -> Path:
    """The repo's files as a fresh clone has them (no build/ or egg-info left over)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    return target


def test_pip_install_puts_only_mtrec_at_the_top_level(tmp_path):
    source = _source_tree(tmp_path / "src")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(source)], check=True
    )
    (wheel,) = (tmp_path / "dist").glob("mtrec-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert tops == {"mtrec", wheel.name.split("-py3")[0] + ".dist-info"}

    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    installed = {p.name for p in site.iterdir() if not p.name.endswith(".dist-info")}
    assert installed - {"bin"} == {"mtrec"}
    for part in (
        "models/modules/trainer_module.py",
        "models/modules/transform_module.py",
        "pipeline/pipeline.py",
        "components/serving_validator.py",
        "serving/server.py",
        "cli/main.py",
        "data/schema/schema.pbtxt",
    ):
        assert (site / "mtrec" / part).is_file(), part

    probe = (
        "import mtrec.models, mtrec.pipeline, mtrec.components, mtrec.serving, mtrec.cli.main\n"
        "print(mtrec.models.__file__)\n"
        "for name in ('models', 'pipeline', 'components', 'serving'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ModuleNotFoundError:\n"
        "        print('no', name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,  # Not the repo: its folders must not be importable by accident.
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert lines[0] == str(site / "mtrec" / "models" / "__init__.py")
    assert lines[1:] == ["no models", "no pipeline", "no components", "no serving"]
