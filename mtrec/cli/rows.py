"""Input rows from files, for score, recommend and query: CSV (every value read as text),
JSON Lines (.jsonl) or TFRecord files of tf.Example (.tfrecord, .tfrecord.gz
gzip-compressed, as the pipeline writes its examples). Values stay raw here; the model's
raw feature spec types them (serving/offline.py)."""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mtrec import names as F
from mtrec.data.source import GZIP_ERRORS, is_gzipped_text, is_tfrecord
from mtrec.errors import DataError, MtrecError

BATCH = 4096
# Besides pandas' ParserError, what reading a CSV (gzipped: by its .gz suffix) can raise.
_CSV_ERRORS = (UnicodeDecodeError, *GZIP_ERRORS)
FORMATS_HELP = (
    "CSV with a header, JSON Lines (.jsonl: one object per line), either gzipped (.csv.gz, "
    ".jsonl.gz), or TFRecord of tf.Example "
    "(.tfrecord, .tfrecord.gz gzip-compressed, e.g. the pipeline's examples; their labels "
    "are ignored)"
)


class RowFile:
    """Rows of one input file as dicts of raw values, numbered as its format counts them
    (CSV: data row, JSON Lines: line, TFRecord: record), with every column seen."""

    def __init__(self, path: str, required: tuple[str, ...], what: str) -> None:
        self.path = Path(path)
        self.required = required
        self.what = what
        self.columns: set[str] = set()
        if not self.path.is_file():
            raise MtrecError(f"{self.path}: no such file")
        name = self.path.name.lower()
        if is_tfrecord(name):  # The pipeline's own shards end in .gz.
            self.kind, self.unit = "tfrecord", "record"
        elif name.endswith((".jsonl", ".jsonl.gz")):
            self.kind, self.unit = "jsonl", "line"
        else:  # CSV, or gzipped CSV (.csv.gz).
            self.kind, self.unit = "csv", "row"
        self._chunks = self._open_csv() if self.kind == "csv" else None

    def where(self, number: int) -> str:
        return f"{self.path}, {self.unit} {number}"

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        reader = {"csv": self._csv_rows, "jsonl": self._jsonl_rows, "tfrecord": self._tf_rows}
        for number, row in reader[self.kind]():
            self.columns.update(row)
            yield number, row

    def batches(self, size: int = BATCH) -> Iterator[list[tuple[int, dict[str, Any]]]]:
        batch: list[tuple[int, dict[str, Any]]] = []
        for item in self.rows():
            batch.append(item)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def note_ignored(self, used: set[str]) -> None:
        """One note on stderr for the columns no model input reads (known pipeline columns,
        such as labels and slices, are left out silently)."""
        ignored = sorted(self.columns - used - set(F.EXAMPLE_COLUMNS))
        if ignored:
            print(
                f"mtrec: note: {self.path}: ignored column(s) {', '.join(ignored)}: "
                "not features of the model",
                file=sys.stderr,
            )

    # ---------------------------------------------------------------------------- formats

    def _csv_error(self, err: Exception) -> MtrecError:
        return MtrecError(f"{self.path}: not a readable CSV ({str(err).splitlines()[0]})")

    def _open_csv(self) -> Iterator[Any]:
        """Chunks of the CSV, every value as text; the header is checked here, at once."""
        import pandas as pd

        options = {"dtype": str, "keep_default_na": False, "encoding": "utf-8"}
        try:
            columns = [str(c).strip() for c in pd.read_csv(self.path, nrows=0, **options)]
            chunks = pd.read_csv(self.path, chunksize=BATCH, **options)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, *_CSV_ERRORS) as err:
            raise self._csv_error(err) from None
        missing = [c for c in self.required if c not in columns]
        if missing:
            raise MtrecError(
                f"{self.path}: {self.what} needs column(s) {', '.join(missing)}; "
                f"found {', '.join(columns) or 'none'}"
            )
        return chunks

    def _csv_rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        import pandas as pd

        number = 0
        try:
            for chunk in self._chunks or ():
                chunk.columns = [str(c).strip() for c in chunk.columns]
                for row in chunk.to_dict("records"):
                    number += 1
                    yield number, row
        except (pd.errors.ParserError, *_CSV_ERRORS) as err:
            raise self._csv_error(err) from None

    def _jsonl_rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        opener = gzip.open if is_gzipped_text(str(self.path)) else open
        try:
            with opener(self.path, "rt", encoding="utf-8") as lines:
                for number, line in enumerate(lines, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise DataError(f"{self.where(number)}: not JSON ({err.msg})") from None
                    if not isinstance(row, dict):
                        raise DataError(f"{self.where(number)}: not a JSON object")
                    yield number, row
        except UnicodeDecodeError as err:
            raise DataError(f"{self.path}: not UTF-8 text ({err.reason})") from None
        except GZIP_ERRORS as err:  # A .jsonl.gz damaged or cut short.
            raise DataError(f"{self.path}: not a readable gzip file ({err})") from None

    def _text(self, value: bytes, number: int, key: str) -> str:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{self.where(number)}: feature '{key}' is not UTF-8 text") from None

    def _tf_rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        import tensorflow as tf
        from google.protobuf.message import DecodeError

        compression = "GZIP" if self.path.name.lower().endswith(".gz") else ""
        records = tf.data.TFRecordDataset(str(self.path), compression_type=compression)
        number = 0
        try:
            for record in records:
                number += 1
                try:
                    example = tf.train.Example.FromString(record.numpy())
                except DecodeError:
                    raise DataError(f"{self.where(number)}: not a tf.Example") from None
                row: dict[str, Any] = {}
                for key, feature in example.features.feature.items():
                    kind = feature.WhichOneof("kind")
                    values = list(getattr(feature, kind).value) if kind else []
                    if kind == "bytes_list":  # Text, as CSV and JSON Lines give it.
                        values = [self._text(value, number, key) for value in values]
                    if values:  # No value: the feature is missing.
                        row[key] = values[0] if len(values) == 1 else values
                yield number, row
        except tf.errors.OpError as err:
            raise DataError(
                f"{self.path}: not a readable TFRecord file of tf.Examples "
                f"({err.message.strip().splitlines()[0]})"
            ) from None
