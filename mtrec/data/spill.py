"""Grouping through files, so that the data job streams on Beam's local runner too.

Beam's local runner (the FnApiRunner behind the DirectRunner) keeps the whole input of every
GroupByKey, and every PCollection passed between two fused stages, in its own process's
memory: on 3M interactions the data job's runner process held about 8 GB. Here rows are
written to bucket files as they stream past, and only the files' names are grouped: what
crosses between stages is a few names per bucket, and a worker then reads one bucket at a
time. The files go through Beam's FileSystems, so the same code runs on Flink or Dataflow
with a ``gs://`` or ``hdfs://`` scratch folder.
"""

from __future__ import annotations

import pickle
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import window
from apache_beam.utils import windowed_value

# Elements a writer holds, over all its buckets, before it appends them to their files.
BUFFERED = 8192
# A writer keeps one file open per bucket: the process may open this many files (as far as
# the hard limit allows; many systems set the soft limit to 1,024).
OPEN_FILES = 8192
_LENGTH = struct.Struct("<Q")


class _Spill(beam.DoFn):
    """Append each element to its bucket's file (one file per bucket per bundle); at the
    bundle's end, yield (bucket, file) for every file written."""

    def __init__(self, bucket_of: Callable[[Any], int], folder: str) -> None:
        self._bucket_of, self._folder = bucket_of, folder

    def setup(self) -> None:
        _allow_open_files(OPEN_FILES)

    def start_bundle(self) -> None:
        self._files: dict[int, tuple[str, Any]] = {}
        self._buffers: dict[int, list[Any]] = {}
        self._held = 0

    def process(self, element: Any) -> Iterator[Any]:
        self._buffers.setdefault(self._bucket_of(element), []).append(element)
        self._held += 1
        if self._held >= BUFFERED:
            self._write_buffers()
        yield from ()  # Nothing per element (and Beam warns where process returns None).

    def _write_buffers(self) -> None:
        for bucket, elements in self._buffers.items():
            if bucket not in self._files:
                path = FileSystems.join(self._folder, f"{bucket}-{uuid.uuid4().hex}.pickle")
                self._files[bucket] = (
                    path,
                    FileSystems.create(
                        path, "application/octet-stream", CompressionTypes.UNCOMPRESSED
                    ),
                )
            data = pickle.dumps(elements, protocol=pickle.HIGHEST_PROTOCOL)
            handle = self._files[bucket][1]
            handle.write(_LENGTH.pack(len(data)))
            handle.write(data)
        self._buffers, self._held = {}, 0

    def finish_bundle(self) -> Iterator[windowed_value.WindowedValue]:
        self._write_buffers()
        for bucket, (path, handle) in sorted(self._files.items()):
            handle.close()
            yield windowed_value.WindowedValue(
                (bucket, path), window.GlobalWindow().max_timestamp(), [window.GlobalWindow()]
            )
        self._files = {}


def _allow_open_files(wanted: int) -> None:
    """Raise this process's soft limit on open files towards ``wanted`` (POSIX only)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise.
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@beam.ptransform_fn
def GroupThroughFiles(
    elements: beam.PCollection, bucket_of: Callable[[Any], int], folder: str
) -> beam.PCollection:
    """(bucket, its files' paths in sorted order) for every bucket ``bucket_of`` put an
    element in; ``read`` gives the elements back. ``bucket_of`` must be picklable."""
    return (
        elements
        | "Spill" >> beam.ParDo(_Spill(bucket_of, folder))
        | "GroupFiles" >> beam.GroupByKey()
        | "SortFiles" >> beam.MapTuple(lambda bucket, paths: (bucket, sorted(paths)))
    )


def read(paths: Iterable[str]) -> Iterator[Any]:
    """The elements written to ``paths`` (one bucket's files), file by file."""
    for path in paths:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            while header := handle.read(_LENGTH.size):
                (length,) = _LENGTH.unpack(header)
                yield from pickle.loads(handle.read(length))


def remove(folder: str) -> None:
    """Delete a folder of bucket files once the job is done with it (absent is fine)."""
    if FileSystems.exists(folder):
        FileSystems.delete([folder])
