"""The layout: each room imports only from rooms before it in the order data flows, and the
Trainer's cache fingerprint covers exactly the package code Transform and Trainer can reach."""

import ast
import textwrap
from pathlib import Path

import pytest

from mtrec.pipeline import fingerprint
from mtrec.pipeline.config import TRAINER_MODULE, TRANSFORM_MODULE

REPO = Path(__file__).resolve().parents[2]
# Rooms in the order data flows; a room may import from itself and the rooms before it.
ROOMS = ("core", "data", "models", "serving", "results", "components", "pipeline", "cli")
# Where each room lives in the repo (installed as mtrec.<room>; core is mtrec's own modules).
FOLDERS = {
    "core": REPO / "mtrec",
    "data": REPO / "mtrec" / "data",
    "models": REPO / "models",
    "serving": REPO / "serving",
    "results": REPO / "mtrec" / "results",
    "components": REPO / "components",
    "pipeline": REPO / "pipeline",
    "cli": REPO / "mtrec" / "cli",
}


def room_of_module(name: str) -> str:
    """'mtrec.models.export' → 'models'; 'mtrec.names' → 'core'."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else "core"


def room_sources(room: str) -> list[Path]:
    """The room's source files; ``python -m mtrec`` (mtrec/__main__.py) is the CLI's."""
    entry = REPO / "mtrec" / "__main__.py"
    if room == "core":
        return sorted(p for p in FOLDERS[room].glob("*.py") if p != entry)
    return sorted(FOLDERS[room].rglob("*.py")) + ([entry] if room == "cli" else [])


def mtrec_imports(path: Path) -> list[str]:
    """Every mtrec module an import statement in ``path`` names, deferred ones included."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return [n for n in names if n == "mtrec" or n.startswith("mtrec.")]


@pytest.mark.parametrize("room", ROOMS)
def test_rooms_import_only_from_rooms_before_them(room):
    allowed = set(ROOMS[: ROOMS.index(room) + 1])
    upstream = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in room_sources(room)
        for name in mtrec_imports(path)
        if room_of_module(name) not in allowed
    ]
    assert room_sources(room) and upstream == []


def test_trainer_fingerprint_reaches_the_example_builder_but_not_the_cli():
    reached = fingerprint.reachable_sources((TRANSFORM_MODULE, TRAINER_MODULE))
    # The export builds its warmup requests with mtrec.examples, through a deferred import.
    assert {"mtrec.examples", "mtrec.names", "mtrec.models.export"} <= set(reached)
    assert reached["mtrec.examples"] == REPO / "mtrec" / "examples.py"
    assert not [name for name in reached if room_of_module(name) in ("cli", "serving", "results")]
    # Transform's own fingerprint leaves the export's helpers out: editing them re-runs the
    # Trainer only.
    assert "mtrec.examples" not in fingerprint.reachable_sources((TRANSFORM_MODULE,))


def _package(root: Path) -> None:
    """A small package laid out like mtrec: an entry module, a deferred import, a CLI."""
    files = {
        "fpkg/__init__.py": "",
        "fpkg/examples.py": "def build(row):\n    return dict(row)\n",
        "fpkg/cli.py": "def main():\n    return 0\n",
        "fpkg/models/__init__.py": "",
        "fpkg/models/training.py": """
            from . import layers

            def run_fn():
                from fpkg.examples import build  # Deferred, as the export's is.
                return build({}), layers
        """,
        "fpkg/models/layers.py": "import os\n",
        "fpkg/models/modules/__init__.py": "",
        "fpkg/models/modules/trainer_module.py": "from fpkg.models.training import run_fn\n",
        "README.md": "# fpkg\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text).lstrip())


def test_fingerprint_changes_with_reachable_code_only(tmp_path, monkeypatch):
    _package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = ("fpkg.models.modules.trainer_module",)

    def current() -> str:
        fingerprint._spec.cache_clear()
        return fingerprint.code_fingerprint(entry, package="fpkg")

    reached = fingerprint.reachable_sources(entry, package="fpkg")
    assert set(reached) == {
        "fpkg",
        "fpkg.examples",
        "fpkg.models",
        "fpkg.models.training",
        "fpkg.models.layers",
        "fpkg.models.modules",
        "fpkg.models.modules.trainer_module",
    }
    before = current()
    (tmp_path / "README.md").write_text("# fpkg, touched\n")
    (tmp_path / "fpkg" / "cli.py").write_text("def main():\n    return 1\n")
    assert current() == before  # Nothing the Trainer runs changed: it stays cached.
    (tmp_path / "fpkg" / "examples.py").write_text("def build(row):\n    return {**row}\n")
    assert current() != before  # The example builder changed: the Trainer re-runs.
