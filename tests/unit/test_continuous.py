"""Continuous training's rules on tiny inputs: which spans a run trains on, how span folders
are named, how versions are pushed and pruned, and the span options of `mtrec run`."""

import os
from pathlib import Path

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import artifact_utils, standard_artifacts

from mtrec import files
from mtrec.cli.run import span_range
from mtrec.components import pusher
from mtrec.components.example_gen import SPLIT_COUNTS
from mtrec.components.span_schema import (
    MIN_DOMAIN_MASS,
    with_domain_mass,
    with_plausible_ranges,
    without_large_domains,
)
from mtrec.components.span_window import SpanWindowStrategy, window_spans
from mtrec.data import source
from mtrec.errors import DataError, MtrecError
from mtrec.pipeline import local_runner
from mtrec.pipeline.config import ContinuousSettings, PipelineConfig


def examples(artifact_id: int, span: int, version: int = 0, ingested: bool = True):
    artifact = standard_artifacts.Examples()
    artifact.id, artifact.span, artifact.version = artifact_id, span, version
    if ingested:
        artifact.set_json_value_custom_property(SPLIT_COUNTS, {})
    return artifact


def anomalies(tmp_path: Path, artifact_id: int, span: int, bad: bool = False):
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.id, artifact.span = artifact_id, span
    artifact.uri = str(tmp_path / f"anomalies-{artifact_id}")
    artifact.split_names = artifact_utils.encode_split_names(["train"])
    found = anomalies_pb2.Anomalies()
    if bad:
        found.anomaly_info["gender"].description = "Examples contain values missing: X"
    os.makedirs(os.path.join(artifact.uri, "Split-train"))
    Path(artifact.uri, "Split-train", "SchemaDiff.pb").write_bytes(found.SerializeToString())
    return artifact


def resolve(window: int, current, written, checks) -> list[tuple[int, int]]:
    result = SpanWindowStrategy(window=window).resolve_artifacts(
        None, {"current": current, "examples": written, "anomalies": checks}
    )
    assert result["current"] == current
    return [(a.span, a.id) for a in result["examples"]]


def test_the_window_is_the_spans_before_the_current_one():
    assert list(window_spans(5, 3)) == [2, 3, 4]
    assert list(window_spans(2, 4)) == [0, 1]


def test_the_window_keeps_validated_spans_only_and_the_newest_version_of_each(tmp_path):
    written = [
        examples(1, 1),
        examples(3, 2),
        examples(5, 2, version=1),  # A newer version of span 2.
        examples(7, 3),  # Failed validation.
        examples(9, 4, ingested=False),  # Transform's output: also Examples.
        examples(11, 5),  # The current span.
        examples(13, 0),  # Before the window.
    ]
    checks = [
        anomalies(tmp_path, 2, 1),
        anomalies(tmp_path, 4, 2),
        anomalies(tmp_path, 6, 2),
        anomalies(tmp_path, 8, 3, bad=True),
    ]
    current = [written[5]]
    assert resolve(4, current, written, checks) == [(1, 1), (2, 5)]
    assert resolve(1, current, written, checks) == []  # Span 4 is not ingested.


def test_examples_never_validated_are_left_out(tmp_path):
    written = [examples(1, 1), examples(3, 2)]
    # Span 1's only check was written before its (re-ingested) examples: it checked others.
    checks = [anomalies(tmp_path, 0, 1)]
    assert resolve(2, [examples(5, 3)], written, checks) == []


def test_span_folders_plain_or_zero_padded(tmp_path):
    for name in ("span-1", "span-2", "span-10", "_tmp", "notes"):
        (tmp_path / "plain" / name).mkdir(parents=True)
    for name in ("span-0001", "span-0002"):
        (tmp_path / "padded" / name).mkdir(parents=True)
    assert source.span_numbers(str(tmp_path / "plain")) == [1, 2, 10]
    assert source.spans(str(tmp_path / "plain")).roles == {"interactions": "span-{SPAN}/*"}
    assert source.spans(str(tmp_path / "padded")).roles == {"interactions": "span-{SPAN:4}/*"}


def test_span_folders_numbered_two_ways_are_refused(tmp_path):
    for name in ("span-0001", "span-2"):
        (tmp_path / name).mkdir()
    with pytest.raises(DataError, match="span folders must all be numbered the same way"):
        source.spans(str(tmp_path))
    with pytest.raises(DataError, match="no span folders"):
        source.spans(str(tmp_path / "span-2"))


def _span_logs(tmp_path: Path, with_files: dict[str, bool]) -> str:
    """Span folders under tmp_path/logs: with one CSV, or with only hidden and '_' files."""
    logs = tmp_path / "logs"
    for name, has_files in with_files.items():
        (logs / name).mkdir(parents=True)
        (logs / name / "_SUCCESS").write_text("")
        (logs / name / ".part-00000.csv.tmp").write_text("user_id,item_id\n")
        if has_files:
            (logs / name / "part-00000.csv").write_text("user_id,item_id,timestamp\n1,2,3\n")
    return str(logs)


def _continuous_run(tmp_path: Path, logs: str, span: int | None) -> None:
    out = tmp_path / "out"
    config = PipelineConfig(
        pipeline_root=str(out / "pipeline_root"),
        source=source.spans(logs),
        serving_model_dir=str(out / "serving_model"),
        continuous=ContinuousSettings(span=span),
    )
    local_runner.run(config, out)


def test_a_span_whose_files_have_not_arrived_is_refused_before_anything_runs(tmp_path):
    logs = _span_logs(tmp_path, {"span-0001": True, "span-0002": True, "span-0003": False})
    for span in (None, 3):  # The newest (the default), or asked for by number.
        with pytest.raises(DataError) as raised:
            _continuous_run(tmp_path, logs, span)
        assert str(raised.value) == (
            f"{logs}: span 3 has no log files yet (hidden and '_' files aside)"
        )
    # No MLMD, no pipeline root: nothing ran (the run's lock file aside).
    assert [p.name for p in (tmp_path / "out").iterdir()] == [files.LOCK_FILE]


def test_an_empty_span_of_the_window_is_left_out_with_a_warning(tmp_path, caplog):
    logs = _span_logs(tmp_path, {"span-1": False, "span-2": True})
    with pytest.raises(DataError) as raised:
        _continuous_run(tmp_path, logs, None)
    assert str(raised.value) == (
        "no span of the training window of span 2 (1) could be ingested; see the warnings above"
    )
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"Span 1 left out of the training window: {logs}: span 1 has no log files yet "
        "(hidden and '_' files aside)"
    ]


def test_a_second_run_on_the_same_output_dir_is_refused_while_the_first_runs(tmp_path):
    logs = _span_logs(tmp_path, {"span-1": True, "span-2": True})
    out = tmp_path / "out"
    with files.exclusive_folder(out, "mtrec run"):  # The first run, still going.
        with pytest.raises(MtrecError) as raised:
            _continuous_run(tmp_path, logs, None)
        assert str(raised.value) == (
            f"{out}: another mtrec run (pid {os.getpid()}) is using this folder; "
            "wait for it to end"
        )
        assert [p.name for p in out.iterdir()] == [files.LOCK_FILE]
    with files.exclusive_folder(out, "mtrec run"):  # Free again once the first ends.
        assert (out / files.LOCK_FILE).read_text() == f"{os.getpid()}\n"


def test_span_ranges():
    assert span_range("3-6") == range(3, 7)
    assert span_range("4") == range(4, 5)
    for text in ("6-3", "a-b", "-1"):
        with pytest.raises(MtrecError, match="--spans must be FIRST-LAST"):
            span_range(text)


def test_versions_only_grow():
    assert pusher.next_version([], now=100) == 100
    assert pusher.next_version([50, 99], now=100) == 100
    assert pusher.next_version([100, 150], now=100) == 151


def test_a_push_appears_whole_and_old_versions_go_after_it(tmp_path):
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"graph")
    (model / "variables" / "variables.index").write_bytes(b"index")
    base = tmp_path / "serving"
    pushed = [pusher.push_version(str(model), str(base))[0] for _ in range(4)]
    assert pushed == sorted(pushed) and len(set(pushed)) == 4
    assert sorted(os.listdir(base)) == sorted(map(str, pushed))  # No staging folder left.
    assert (base / str(pushed[-1]) / "variables" / "variables.index").read_bytes() == b"index"
    assert pusher.prune(str(base), keep=2) == pushed[:2]
    assert pusher.version_numbers(str(base)) == pushed[2:]
    assert pusher.prune(str(base), keep=5) == []


def test_the_first_spans_schema_lets_some_values_be_new():
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema()
    gender = schema.feature.add(name="gender", domain="gender")
    gender.type = schema_pb2.BYTES
    age = schema.feature.add(name="age")
    age.type = schema_pb2.INT
    relaxed = with_domain_mass(schema, 0.9)
    masses = {f.name: f.distribution_constraints.min_domain_mass for f in relaxed.feature}
    assert masses["gender"] == pytest.approx(0.9)
    assert not relaxed.feature[1].HasField("distribution_constraints")


def test_the_first_spans_schema_bounds_ages_and_years_as_the_contract_does():
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx.utils import io_utils

    from mtrec.data.config import CURATED_SCHEMA

    schema = schema_pb2.Schema()
    for name, kind in (("age", schema_pb2.INT), ("year", schema_pb2.INT), ("rank", schema_pb2.INT)):
        schema.feature.add(name=name).type = kind
    curated = io_utils.parse_pbtxt_file(CURATED_SCHEMA, schema_pb2.Schema())
    bounded = with_plausible_ranges(schema, curated)
    domains = {f.name: (f.int_domain.min, f.int_domain.max) for f in bounded.feature}
    assert domains == {"age": (0, 120), "year": (0, 2100), "rank": (0, 0)}


def test_the_first_spans_schema_keeps_category_sets_not_samples_of_large_domains():
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema()
    schema.string_domain.add(name="gender", value=["F", "M"])
    schema.string_domain.add(name="zip_prefix", value=[f"{n:03d}" for n in range(80)])
    for name in ("gender", "zip_prefix"):
        feature = schema.feature.add(name=name, domain=name)
        feature.type = schema_pb2.BYTES
    inline = schema.feature.add(name="title")
    inline.type = schema_pb2.BYTES
    inline.string_domain.value.extend(f"t{n}" for n in range(40))
    kept = without_large_domains(schema, 32)
    assert [d.name for d in kept.string_domain] == ["gender"]
    assert {f.name: f.WhichOneof("domain_info") for f in kept.feature} == {
        "gender": "domain",
        "zip_prefix": None,
        "title": None,
    }


def test_a_span_may_bring_new_categories_but_not_mostly_new_ones():
    """TFDV's own validation with the kept schema: one new user's rows in a small split
    pass; a column mostly of unseen values does not."""
    import pandas as pd
    import tensorflow_data_validation as tfdv

    def statistics(values: list[str]):
        return tfdv.generate_statistics_from_dataframe(pd.DataFrame({"occupation": values}))

    schema = with_domain_mass(
        tfdv.infer_schema(statistics(["engineer"] * 50 + ["artist"] * 50)), MIN_DOMAIN_MASS
    )

    def anomalies(values: list[str]) -> dict:
        return dict(tfdv.validate_statistics(statistics(values), schema).anomaly_info)

    assert anomalies(["engineer"] * 84 + ["salesman"] * 16) == {}
    found = anomalies(["engineer"] * 40 + ["salesman"] * 60)
    assert list(found) == ["occupation"]
    assert "salesman" in found["occupation"].description
