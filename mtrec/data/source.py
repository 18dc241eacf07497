"""Where the raw logs are: the data component's inputs, as file patterns per role.

A source is one of three kinds, each a set of roles (the ExampleGen input splits):
- ``movielens``: MovieLens-100K, ratings plus user and item side files, split by time;
- ``ratings``: an explicit split of MovieLens-style ratings files (e.g. u1.base and u1.test)
  with the side files of a MovieLens directory;
- ``logs``: your own interactions with real click and purchase labels, one file, a folder of
  shards split by time, or explicit train and eval files.

Patterns are relative to one base folder, as TFX's ExampleGen driver expects: it fingerprints
the files behind every pattern, so a changed input re-runs the component and nothing else does.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zlib

from mtrec.errors import DataError

MOVIELENS = "movielens"
RATINGS = "ratings"
LOGS = "logs"
KINDS = (MOVIELENS, RATINGS, LOGS)

# Roles: the input splits of the data component.
INTERACTIONS = "interactions"
TRAIN = "train"
EVAL = "eval"
USERS = "users"
ITEMS = "items"

GROUPLENS = "grouplens"
RECBOLE = "recbole"
MOVIELENS_FILES = {
    GROUPLENS: {INTERACTIONS: "u.data", USERS: "u.user", ITEMS: "u.item"},
    RECBOLE: {INTERACTIONS: "ml-100k.inter", USERS: "ml-100k.user", ITEMS: "ml-100k.item"},
}
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecord.gz", ".tfr", ".gz")
GZIPPED_TEXT_SUFFIXES = (".csv.gz", ".jsonl.gz")
# Continuous training: one folder per span (a day, a week...), TFX ExampleGen's {SPAN} spec.
SPAN_FOLDER = "span-{SPAN}"
SPAN_NAME = re.compile(r"span-(\d+)$")


@dataclasses.dataclass(frozen=True)
class DataSource:
    """The raw inputs of one pipeline: their kind, a base folder and a pattern per role."""

    kind: str
    base: str
    patterns: tuple[tuple[str, str], ...]
    layout: str = ""  # MovieLens side files: GROUPLENS or RECBOLE.

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"source kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def roles(self) -> dict[str, str]:
        """Role -> pattern relative to ``base``."""
        return dict(self.patterns)

    def to_dict(self) -> dict:
        """What the component records (besides the patterns, kept in its input_config)."""
        return {"kind": self.kind, "layout": self.layout}


def detect_layout(directory: str | os.PathLike) -> str | None:
    """GROUPLENS, RECBOLE, or None when the local ``directory`` holds neither layout."""
    for layout, files in MOVIELENS_FILES.items():
        if all(os.path.isfile(os.path.join(directory, name)) for name in files.values()):
            return layout
    return None


def not_movielens(directory: str | os.PathLike) -> DataError:
    """The error for a folder in neither MovieLens layout, naming both."""
    grouplens, recbole = (", ".join(files.values()) for files in MOVIELENS_FILES.values())
    return DataError(
        f"{directory}: not a MovieLens-100K directory; expected {grouplens} "
        f"(GroupLens layout) or {recbole} (RecBole layout)"
    )


def is_remote(path: str) -> bool:
    """A path on a remote file system (gs://, s3://...): not read where the pipeline is
    defined, only where it runs."""
    return "://" in path


def _side_files(directory: str) -> tuple[str, dict[str, str]]:
    # A remote folder is not read where the pipeline is compiled: GroupLens layout assumed.
    layout = GROUPLENS if is_remote(directory) else detect_layout(directory)
    if layout is None:
        raise not_movielens(directory)
    files = MOVIELENS_FILES[layout]
    return layout, {role: os.path.join(directory, name) for role, name in files.items()}


def _relative(paths: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """One base folder for every path (their common parent) and patterns relative to it."""
    absolute = {role: _absolute(path) for role, path in paths.items()}
    schemes = {p.split("://")[0] if "://" in p else "" for p in absolute.values()}
    if len(schemes) > 1:
        raise DataError("every input must be on the same file system: " + ", ".join(paths.values()))
    scheme = schemes.pop()
    prefix = f"{scheme}://" if scheme else ""
    local = {role: p[len(prefix) :] for role, p in absolute.items()}
    base = os.path.commonpath([os.path.dirname(p) for p in local.values()])
    patterns = tuple(sorted((role, os.path.relpath(p, base)) for role, p in local.items()))
    return prefix + base, patterns


def _absolute(path: str) -> str:
    return path if is_remote(path) else os.path.abspath(path)


def _pattern(path: str) -> str:
    """A file as it is; a folder as every file in it (shards written by a job, say)."""
    import tensorflow as tf

    if is_remote(path):
        return os.path.join(path, "*") if path.endswith("/") else path
    if tf.io.gfile.isdir(path):
        return os.path.join(path, "*")
    if not tf.io.gfile.exists(path) and not tf.io.gfile.glob(path):
        raise DataError(f"{path}: no such file")
    return path


def movielens(directory: str) -> DataSource:
    """MovieLens-100K in either published layout, split by time."""
    layout, files = _side_files(directory)
    base, patterns = _relative(files)
    return DataSource(MOVIELENS, base, patterns, layout)


def ratings(train: str, eval_: str, side_directory: str) -> DataSource:
    """u1-style train and eval ratings files, side features from a MovieLens directory."""
    layout, files = _side_files(side_directory)
    files = {
        USERS: files[USERS],
        ITEMS: files[ITEMS],
        TRAIN: _pattern(train),
        EVAL: _pattern(eval_),
    }
    base, patterns = _relative(files)
    return DataSource(RATINGS, base, patterns, layout)


def logs(
    interactions: str | None = None, train: str | None = None, eval_: str | None = None
) -> DataSource:
    """Your own labelled logs: ``interactions`` split by time, or ``train`` and ``eval_`` as
    given. Each is a CSV or TFRecord file, a glob, or a folder of them (remote: ending in
    '/')."""
    if interactions:
        files = {INTERACTIONS: _pattern(interactions)}
    else:
        files = {TRAIN: _pattern(train or ""), EVAL: _pattern(eval_ or "")}
    base, patterns = _relative(files)
    return DataSource(LOGS, base, patterns)


# What reading a gzipped file can raise when it is not gzip or is cut short.
GZIP_ERRORS = (OSError, EOFError, zlib.error)


def is_gzipped_text(path: str) -> bool:
    """A gzip-compressed text file (``logs.csv.gz``, ``rows.jsonl.gz``): read as its text."""
    return path.lower().endswith(GZIPPED_TEXT_SUFFIXES)


def is_tfrecord(path: str) -> bool:
    """TFRecord of tf.Examples (by suffix; another .gz means gzipped TFRecord), else CSV."""
    return path.endswith(TFRECORD_SUFFIXES) and not is_gzipped_text(path)


def spans(directory: str) -> DataSource:
    """Your own labelled logs as one folder per span, ``span-{SPAN}/`` (a day, a week...):
    TFX's ExampleGen driver picks the span (the newest, or the one asked for) and records it."""
    folder = SPAN_FOLDER
    if not is_remote(directory):  # Checked now rather than in the driver.
        folder = span_folder_pattern(span_folders(directory))
    base = directory.rstrip("/") if is_remote(directory) else _absolute(directory)
    return DataSource(LOGS, base, ((INTERACTIONS, f"{folder}/*"),))


def span_folder_pattern(names: list[str]) -> str:
    """``span-{SPAN}``, or ``span-{SPAN:4}`` for folders zero-padded to 4 digits (TFX pads
    the span to that width when it looks for one by number)."""
    digits = {SPAN_NAME.match(name).group(1) for name in names}
    widths = {len(d) for d in digits if d.startswith("0")}
    if not widths:
        return SPAN_FOLDER
    width = widths.pop()
    if widths or any(len(d) != width for d in digits):
        raise DataError(
            "span folders must all be numbered the same way, either span-1, span-2... or "
            f"zero-padded to one width (span-0001...); found {', '.join(sorted(names)[:4])}"
        )
    return SPAN_FOLDER.replace("{SPAN}", f"{{SPAN:{width}}}")


def span_folders(directory: str) -> list[str]:
    """The span folder names in a logs folder; none is an error."""
    import tensorflow as tf

    if not tf.io.gfile.isdir(directory):
        raise DataError(f"{directory}: no such folder")
    names = [n.rstrip("/") for n in tf.io.gfile.listdir(directory)]
    found = [n for n in names if SPAN_NAME.match(n)]
    if not found:
        raise DataError(
            f"{directory}: no span folders; expected one folder per span, named "
            "span-<number> (e.g. span-1/ or span-0001/), each with CSV or TFRecord logs"
        )
    return found


def span_numbers(directory: str) -> list[int]:
    """The spans in a local or remote logs folder, sorted; none is an error."""
    return sorted(int(SPAN_NAME.match(name).group(1)) for name in span_folders(directory))


def span_pattern(directory: str, span: int) -> str:
    """The interactions pattern of one span's folder in a logs folder, relative to it
    (``span-0004/*``); a span without a folder is an error."""
    for name in span_folders(directory):
        if int(SPAN_NAME.match(name).group(1)) == span:
            return f"{name}/*"
    raise DataError(f"{directory}: no span {span}")
