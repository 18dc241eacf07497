"""Grouping through files: every element comes back once, in its bucket, on one or two
workers, and only file names cross between the stages."""

import functools
import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from mtrec.data import spill

BUCKETS = 5
TWO_WORKERS = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")


def _bucket(element: dict, buckets: int) -> int:
    return element["id"] % buckets


def _contents(bucket: tuple[int, list[str]]) -> tuple[int, list[int]]:
    index, paths = bucket
    elements = list(spill.read(paths))
    assert all(e["text"] == f"row {e['id']}" for e in elements)
    return index, sorted(e["id"] for e in elements)


@pytest.mark.parametrize("options", [(), TWO_WORKERS], ids=["one worker", "two workers"])
def test_every_element_comes_back_once_in_its_bucket(tmp_path, options):
    count = 20_000  # More than a writer buffers, so files hold several chunks.
    folder = str(tmp_path / "spill" / "rows")
    with beam.Pipeline(options=PipelineOptions(list(options))) as pipeline:
        grouped = (
            pipeline
            | beam.Create([{"id": i, "text": f"row {i}"} for i in range(count)])
            | spill.GroupThroughFiles(functools.partial(_bucket, buckets=BUCKETS), folder)
        )
        assert_that(
            grouped | beam.Map(_contents),
            equal_to([(b, list(range(b, count, BUCKETS))) for b in range(BUCKETS)]),
        )
    files = os.listdir(folder)
    assert files and all(name.split("-")[0] in {str(b) for b in range(BUCKETS)} for name in files)
    spill.remove(str(tmp_path / "spill"))
    assert not (tmp_path / "spill").exists()
    spill.remove(str(tmp_path / "spill"))  # Absent is fine.


def test_a_bundle_writes_one_file_per_bucket_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "BUFFERED", 7)
    folder = str(tmp_path / "rows")
    with beam.Pipeline() as pipeline:
        grouped = (
            pipeline
            | beam.Create([{"id": i, "text": f"row {i}"} for i in range(100)])
            | spill.GroupThroughFiles(functools.partial(_bucket, buckets=BUCKETS), folder)
        )
        assert_that(
            grouped | beam.MapTuple(lambda b, paths: (b, len(paths))),
            equal_to([(b, 1) for b in range(BUCKETS)]),
        )
    assert len(os.listdir(folder)) == BUCKETS
    path = os.path.join(folder, sorted(os.listdir(folder))[0])
    assert [e["id"] for e in spill.read([path])] == list(range(0, 100, BUCKETS))


def test_a_writer_opens_a_file_per_bucket_beyond_a_low_soft_limit(tmp_path):
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"hard limit on open files is {hard}")
    buckets = 1500  # More files than the soft limit set here (and than Linux's usual 1,024).
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        with beam.Pipeline() as pipeline:
            grouped = (
                pipeline
                | beam.Create([{"id": i, "text": f"row {i}"} for i in range(buckets)])
                | spill.GroupThroughFiles(
                    functools.partial(_bucket, buckets=buckets), str(tmp_path / "rows")
                )
            )
            assert_that(grouped | beam.combiners.Count.Globally(), equal_to([buckets]))
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= buckets
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
