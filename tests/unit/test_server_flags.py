"""How `mtrec serve` reads TF Serving's deployment flags (model_servers/main.cc, server.cc)."""

import pytest

from mtrec.serving import config


@pytest.mark.parametrize(
    "session, intra, inter, pools",
    [
        (0, 0, 0, config.Parallelism(0, 0)),  # TensorFlow chooses both.
        (4, 0, 0, config.Parallelism(4, 4)),  # The session flag sizes both pools.
        (4, 2, 0, config.Parallelism(2, 0)),  # Either op flag set: the op flags win.
        (0, 0, 3, config.Parallelism(0, 3)),
        (0, 1, 2, config.Parallelism(1, 2)),
    ],
)
def test_parallelism_follows_tf_serving(session, intra, inter, pools):
    assert config.parallelism(session, intra, inter) == pools


def test_parallelism_refuses_all_three_and_negatives():
    with pytest.raises(config.ConfigError, match="You cannot configure all"):
        config.parallelism(1, 1, 1)
    with pytest.raises(config.ConfigError, match="--tensorflow_inter_op_parallelism must be >= 0"):
        config.parallelism(0, 0, -1)


def test_channel_arguments_are_typed_like_tf_serving():
    assert config.parse_channel_arguments(
        "grpc.max_connection_age_ms=2000, grpc.primary_user_agent=mtrec,grpc.x=-3,"
        "grpc.big=9999999999,"
    ) == (
        ("grpc.max_connection_age_ms", 2000),
        ("grpc.primary_user_agent", "mtrec"),
        ("grpc.x", -3),
        ("grpc.big", "9999999999"),  # Not a 32-bit integer: passed as text.
    )
    assert config.parse_channel_arguments("") == ()
    with pytest.raises(config.ConfigError, match="'=5' is not key=value"):
        config.parse_channel_arguments("=5")


def test_saved_model_tags():
    assert config.parse_tags("serve, gpu") == frozenset({"serve", "gpu"})
    with pytest.raises(config.ConfigError, match="needs at least one tag"):
        config.parse_tags(",")


@pytest.mark.parametrize(
    "read, what",
    [
        (config.read_model_config_file, "model config"),
        (config.read_batching_file, "batching parameters"),
        (config.read_monitoring_config_file, "monitoring config"),
        (config.read_ssl_config_file, "SSL config"),
    ],
)
def test_config_files_missing_or_unreadable_are_one_line_errors(tmp_path, read, what):
    with pytest.raises(config.ConfigError, match=f"no such {what} file"):
        read(tmp_path / "nope.config")
    binary = tmp_path / "binary.config"
    binary.write_bytes(b"\xff\xfe not text")
    with pytest.raises(config.ConfigError, match=f"cannot read the {what} file: 'utf-8' codec"):
        read(binary)
