"""Watching Beam's local runner in tests."""

from apache_beam.runners.worker import data_plane


def count_timed_streams(monkeypatch) -> list:
    """From now on (for the test), note the flush period of every data stream that flushes on
    a timer (see mtrec.local_beam); returns the list they are noted in."""
    timed: list = []
    start = data_plane.TimeBasedBufferingClosableOutputStream.__init__

    def counted(self, *args, **kwargs):
        timed.append(kwargs.get("time_flush_threshold_ms"))
        start(self, *args, **kwargs)

    monkeypatch.setattr(data_plane.TimeBasedBufferingClosableOutputStream, "__init__", counted)
    return timed
