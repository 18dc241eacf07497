"""Beam's local runner loses what is written during a timed flush; mtrec turns those off."""

import threading

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.coders.coder_impl import create_InputStream
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.runners.worker import data_plane
from apache_beam.testing.util import assert_that, equal_to

from mtrec import local_beam
from tests.support.beam import count_timed_streams


def test_beams_timed_flush_drops_what_is_written_while_it_runs():
    """Beam's own race, made deterministic: the second element is written after the flush
    took the buffer and before it cleared it. If this fails, Beam fixed it."""
    sent: list[bytes] = []
    handed_on, written = threading.Event(), threading.Event()

    def hand_on(data: bytes) -> None:
        sent.append(data)
        handed_on.set()
        written.wait(5)

    stream = data_plane.TimeBasedBufferingClosableOutputStream(
        close_callback=sent.append, flush_callback=hand_on, time_flush_threshold_ms=60_000
    )
    coder = VarIntCoder().get_impl()
    coder.encode_to_stream(1, stream, True)
    flusher = threading.Thread(target=stream.flush)
    flusher.start()
    handed_on.wait(5)
    coder.encode_to_stream(2, stream, True)
    written.set()
    flusher.join(5)
    coder.encode_to_stream(3, stream, True)
    stream.close()
    received = create_InputStream(b"".join(sent))
    values = []
    while received.size() > 0:
        values.append(coder.decode_from_stream(received, True))
    assert values == [1, 3]


def test_the_local_runner_then_flushes_by_size_only(monkeypatch):
    timed = count_timed_streams(monkeypatch)

    def run() -> None:
        options = ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]
        with beam.Pipeline(options=PipelineOptions(options)) as pipeline:
            counts = (
                pipeline
                | beam.Create(range(1000))
                | beam.Map(lambda n: (n % 7, 1))
                | beam.CombinePerKey(sum)
            )
            assert_that(counts, equal_to([(k, len(range(k, 1000, 7))) for k in range(7)]))

    monkeypatch.setattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", 1000)
    run()
    assert timed and set(timed) == {1000}  # Beam's default: every data stream flushes on a timer.
    timed.clear()
    local_beam.flush_by_size_only()
    assert worker_handlers.DATA_BUFFER_TIME_LIMIT_MS == 0
    run()
    assert timed == []
