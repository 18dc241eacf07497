"""The output helpers every command writes through: a file appears whole or not at all, and
a path that cannot be written is a one-line error that leaves nothing behind."""

import pytest

from mtrec.errors import ConfigError
from mtrec.files import output_folder, staged_file


def test_a_staged_file_replaces_the_output_only_when_complete(tmp_path):
    target = tmp_path / "out" / "report.html"
    with staged_file(target) as staging:
        staging.write_text("new")
        assert not target.exists()  # Nothing half-written is visible.
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError, match="disk full"), staged_file(target) as staging:
        staging.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]


def test_a_folder_where_the_file_should_go_is_refused_and_nothing_is_written(tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    with pytest.raises(ConfigError) as raised, staged_file(folder):
        pass
    assert str(raised.value) == f"{folder}: is a directory; give a file name"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]
    assert not any(folder.iterdir())


def test_an_output_folder_is_made_but_never_over_a_file(tmp_path):
    assert output_folder(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError) as raised:
        output_folder(tmp_path / "file")
    assert str(raised.value) == f"{tmp_path / 'file'}: exists and is not a directory"
    with pytest.raises(ConfigError) as raised:
        output_folder(tmp_path / "file" / "below")
    assert (
        str(raised.value)
        == f"{tmp_path / 'file' / 'below'}: cannot make the folder: Not a directory"
    )
