"""TF Serving's configuration files, read the way `tensorflow_model_server` reads them.

- ``--model_config_file``: a text-format ``ModelServerConfig`` (the protos come from
  ``tensorflow-serving-api``): several models, each with a base path, a version policy
  (latest N, all, specific versions) and version labels.
- ``--batching_parameters_file``: a text-format ``BatchingParameters``. That proto is not in
  the pip package, so its fields are parsed here; ``write_batching_file`` writes a file that
  the real server reads unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from mtrec.serving.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which versions under a base path are served: ``latest`` N, ``all``, or ``specific``."""

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of those found on disk."""
        ordered = sorted(available)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[-self.num_versions :] if self.num_versions > 0 else []


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One served model: name, base path (holding numbered version folders), policy, labels
    and its ``logging_config`` (a serialized ``LoggingConfig``; None: requests not logged)."""

    name: str
    base_path: str
    policy: VersionPolicy = dataclasses.field(default_factory=VersionPolicy)
    labels: tuple[tuple[str, int], ...] = ()
    logging_config: bytes | None = None

    @property
    def label_map(self) -> dict[str, int]:
        return dict(self.labels)


def single_model(name: str, base_path: str) -> list[ModelSpec]:
    """What ``--model_name`` and ``--model_base_path`` mean: one model, latest version."""
    return [ModelSpec(name=name, base_path=str(Path(base_path).resolve()))]


def parse_model_config(text: str, source: str = "model config") -> list[ModelSpec]:
    """Models from a text-format ``ModelServerConfig`` (``model_config_list`` only)."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ConfigError(f"{source}: not a ModelServerConfig: {err}") from None
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{source}: needs a model_config_list")
    specs = []
    for model in config.model_config_list.config:
        if not model.name or not model.base_path:
            raise ConfigError(f"{source}: every model needs a name and a base_path")
        specs.append(
            ModelSpec(
                name=model.name,
                base_path=model.base_path,
                policy=_policy(model.model_version_policy),
                labels=tuple(sorted(model.version_labels.items())),
                logging_config=(
                    model.logging_config.SerializeToString(deterministic=True)
                    if model.HasField("logging_config")
                    else None
                ),
            )
        )
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: model names must be unique, got {names}")
    return specs


def logging_configs(specs: list[ModelSpec]) -> dict[str, bytes]:
    """Model name -> serialized ``LoggingConfig``, for the models that log requests."""
    return {s.name: s.logging_config for s in specs if s.logging_config is not None}


def read_model_config_file(path: str | Path) -> list[ModelSpec]:
    """``--model_config_file``; a relative base path resolves against the file's folder."""
    file = Path(path)
    specs = parse_model_config(_read_text(file, "model config"), str(file))
    return [
        dataclasses.replace(s, base_path=str((file.parent / s.base_path).resolve())) for s in specs
    ]


def _policy(proto: object) -> VersionPolicy:
    which = proto.WhichOneof("policy_choice")
    if which == "all":
        return VersionPolicy("all")
    if which == "specific":
        return VersionPolicy("specific", versions=tuple(proto.specific.versions))
    if which == "latest":
        return VersionPolicy("latest", num_versions=proto.latest.num_versions or 1)
    return VersionPolicy()


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    """Server-side batching: merge concurrent requests into one model call of at most
    ``max_batch_size`` rows, waiting at most ``batch_timeout_micros`` for a batch to fill."""

    max_batch_size: int = 64
    # 0 (TF Serving's default too): no waiting; a batch is whatever queued while the model
    # was busy, so one client pays no latency and concurrent ones share model calls.
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 1000
    num_batch_threads: int = 1

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value < (0 if field.name == "batch_timeout_micros" else 1):
                raise ConfigError(
                    f"batching parameter {field.name} must be positive, " f"got {value}"
                )


# TF Serving's BatchingParameters fields we honour; the others are accepted and ignored.
_BATCHING_FIELDS = {f.name for f in dataclasses.fields(BatchingConfig)}
_IGNORED_BATCHING_FIELDS = {
    "allowed_batch_sizes",
    "pad_variable_length_inputs",
    "thread_pool_name",
    "enable_large_batch_splitting",
    "max_execution_batch_size",
}
_FIELD = re.compile(
    r"(\w+)\s*:?\s*\{\s*value\s*:\s*([^\s}]+)\s*\}[,;]?|(\w+)\s*:\s*([^\s{},;]+)[,;]?"
)


def parse_batching_text(text: str, source: str = "batching parameters") -> BatchingConfig:
    """Fields of a text-format ``BatchingParameters`` such as
    ``max_batch_size { value: 64 }``."""
    values: dict[str, int] = {}
    body = re.sub(r"#.*", "", text)
    leftover = _FIELD.sub(" ", body).split()
    if leftover:  # As TF Serving's text-format parser, refuse what is not a field.
        raise ConfigError(
            f"{source}: not a BatchingParameters text proto: cannot read '{leftover[0]}'"
        )
    for match in _FIELD.finditer(body):
        name = match.group(1) or match.group(3)
        raw = match.group(2) or match.group(4)
        if name in _IGNORED_BATCHING_FIELDS:
            continue
        if name not in _BATCHING_FIELDS:
            raise ConfigError(f"{source}: unknown batching parameter '{name}'")
        try:
            values[name] = int(raw.strip('"'))
        except ValueError:
            raise ConfigError(f"{source}: {name} must be an integer, got {raw}") from None
    return BatchingConfig(**values)


def read_batching_file(path: str | Path) -> BatchingConfig:
    file = Path(path)
    return parse_batching_text(_read_text(file, "batching parameters"), str(file))


def batching_text(config: BatchingConfig) -> str:
    """``config`` in the text format TF Serving's ``--batching_parameters_file`` reads."""
    return "".join(
        f"{f.name} {{ value: {getattr(config, f.name)} }}\n" for f in dataclasses.fields(config)
    )


def write_batching_file(config: BatchingConfig, path: str | Path) -> Path:
    file = Path(path)
    file.write_text(batching_text(config))
    return file


def model_config_text(specs: list[ModelSpec]) -> str:
    """``specs`` as a text-format ``ModelServerConfig`` for ``--model_config_file``."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for spec in specs:
        model = config.model_config_list.config.add(
            name=spec.name, base_path=spec.base_path, model_platform="tensorflow"
        )
        if spec.policy.kind == "all":
            model.model_version_policy.all.SetInParent()
        elif spec.policy.kind == "specific":
            model.model_version_policy.specific.versions.extend(spec.policy.versions)
        else:
            model.model_version_policy.latest.num_versions = spec.policy.num_versions
        for label, version in spec.labels:
            model.version_labels[label] = version
        if spec.logging_config is not None:
            model.logging_config.SetInParent()
            model.logging_config.ParseFromString(spec.logging_config)
    return text_format.MessageToString(config)


def docker_command(
    config_dir: Path,
    push_dir: str,
    base_path: str = "/models/mtrec",
    image: str = "tensorflow/serving:2.16.1",
) -> str:
    """The production command: the real server on the same push folder and configs, with
    the push folder mounted where models.config's ``base_path`` says."""
    config_dir = Path(config_dir).resolve()
    return (
        f"docker run --rm -p 8500:8500 -p 8501:8501 \\\n"
        f"  -v {Path(push_dir).resolve()}:{base_path} \\\n"
        f"  -v {config_dir}:/config \\\n"
        f"  {image} \\\n"
        f"  --port=8500 --rest_api_port=8501 \\\n"
        f"  --model_config_file=/config/models.config \\\n"
        f"  --enable_batching=true --batching_parameters_file=/config/batching.config \\\n"
        f"  --file_system_poll_wait_seconds=1"
    )


@dataclasses.dataclass(frozen=True)
class MonitoringConfig:
    """``--monitoring_config_file``: TF Serving's ``MonitoringConfig``; with ``enable`` the
    REST port serves Prometheus metrics at ``path``."""

    enable: bool = False
    path: str = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath.


# Fields of the small TF Serving config protos the pip package lacks: (name, number, type),
# the type a scalar's or another message's name.
_Fields = tuple[tuple[str, int, str], ...]
_SCALARS = {"bool": "TYPE_BOOL", "string": "TYPE_STRING"}


def _config_proto(file: str, messages: dict[str, _Fields], root: str) -> type:
    """A message class for one of tensorflow_serving/config's protos, built in a private
    descriptor pool so that protobuf's own text parser reads a file as strictly as
    tensorflow_model_server's ParseProtoTextFile does."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name=file, package="tensorflow.serving", syntax="proto3"
    )
    for name, fields in messages.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind in fields:
            if kind in _SCALARS:
                kind_fields = {"type": getattr(field, _SCALARS[kind])}
            else:
                kind_fields = {
                    "type": field.TYPE_MESSAGE,
                    "type_name": f".tensorflow.serving.{kind}",
                }
            message.field.add(
                name=field_name, number=number, label=field.LABEL_OPTIONAL, **kind_fields
            )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{root}"))


def _parse_strictly(text: str, message_class: type, source: str) -> Any:
    """``text`` as a text-format message of ``message_class``; one-line error otherwise."""
    message = message_class()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        words = " ".join(str(err).split())
        raise ConfigError(
            f"{source}: not a valid {message_class.DESCRIPTOR.name}: {words}"
        ) from None
    return message


def _read_text(path: str | Path, what: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: no such {what} file")
    try:
        return file.read_text()
    except (OSError, UnicodeError) as err:
        raise ConfigError(f"{file}: cannot read the {what} file: {err}") from None


@functools.cache
def _monitoring_config_class() -> type:
    """tensorflow_serving/config/monitoring_config.proto."""
    return _config_proto(
        "tensorflow_serving/config/monitoring_config.proto",
        {
            "PrometheusConfig": (("enable", 1, "bool"), ("path", 2, "string")),
            "MonitoringConfig": (("prometheus_config", 1, "PrometheusConfig"),),
        },
        "MonitoringConfig",
    )


def parse_monitoring_config(text: str, source: str = "monitoring config") -> MonitoringConfig:
    """A text-format ``MonitoringConfig``, e.g.
    ``prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }``; an empty
    path means the default one, as in TF Serving."""
    config = _parse_strictly(text, _monitoring_config_class(), source)
    prometheus = config.prometheus_config
    path = prometheus.path or MonitoringConfig.path
    if not path.startswith("/") or any(c.isspace() or c in "?#" for c in path):
        raise ConfigError(
            f"{source}: prometheus_config.path must be a URL path starting with '/', got {path!r}"
        )
    return MonitoringConfig(enable=prometheus.enable, path=path)


def read_monitoring_config_file(path: str | Path) -> MonitoringConfig:
    return parse_monitoring_config(_read_text(path, "monitoring config"), str(path))


@dataclasses.dataclass(frozen=True)
class Parallelism:
    """TensorFlow's thread pools as ``--tensorflow_session_parallelism``,
    ``--tensorflow_intra_op_parallelism`` and ``--tensorflow_inter_op_parallelism`` set them
    (0: TensorFlow chooses)."""

    intra_op: int = 0
    inter_op: int = 0


def parallelism(session: int = 0, intra_op: int = 0, inter_op: int = 0) -> Parallelism:
    """TF Serving's rule (model_servers/server.cc): the intra/inter-op flags when either is
    set, else the session flag for both pools; all three set is a start-up error."""
    for name, value in (
        ("tensorflow_session_parallelism", session),
        ("tensorflow_intra_op_parallelism", intra_op),
        ("tensorflow_inter_op_parallelism", inter_op),
    ):
        if value < 0:
            raise ConfigError(f"--{name} must be >= 0 (0: chosen by TensorFlow), got {value}")
    if session > 0 and intra_op > 0 and inter_op > 0:
        raise ConfigError(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. "
            "You cannot configure all."
        )
    if intra_op > 0 or inter_op > 0:
        return Parallelism(intra_op, inter_op)
    return Parallelism(session, session)


def apply_parallelism(pools: Parallelism) -> None:
    """Size TensorFlow's thread pools in this process. They are fixed once TensorFlow has run
    anything, so a server started after that (in a test, say) can only keep the sizes."""
    import tensorflow as tf

    api = tf.config.threading
    for flag, size, get, put in (
        (
            "tensorflow_intra_op_parallelism",
            pools.intra_op,
            api.get_intra_op_parallelism_threads,
            api.set_intra_op_parallelism_threads,
        ),
        (
            "tensorflow_inter_op_parallelism",
            pools.inter_op,
            api.get_inter_op_parallelism_threads,
            api.set_inter_op_parallelism_threads,
        ),
    ):
        if size and get() != size:
            try:
                put(size)
            except RuntimeError:  # "... cannot be modified after initialization."
                raise ConfigError(
                    f"--{flag}={size}: TensorFlow already runs in this process with "
                    f"{get() or 'its own number of'} threads; the pools are sized before "
                    "anything runs"
                ) from None


def parse_channel_arguments(text: str) -> tuple[tuple[str, int | str], ...]:
    """``--grpc_channel_arguments``: comma-separated ``key=value`` pairs for the gRPC server;
    a value that reads as a 32-bit integer is passed as one (as TF Serving does)."""
    arguments: list[tuple[str, int | str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--grpc_channel_arguments: {item!r} is not key=value "
                "(e.g. grpc.max_connection_age_ms=2000)"
            )
        try:
            number = int(value)
        except ValueError:
            arguments.append((key.strip(), value))
            continue
        arguments.append((key.strip(), number if -(2**31) <= number < 2**31 else value))
    return tuple(arguments)


def parse_tags(text: str) -> frozenset[str]:
    """``--saved_model_tags``: the comma-separated tag set of the MetaGraph to load."""
    tags = frozenset(filter(None, (tag.strip() for tag in text.split(","))))
    if not tags:
        raise ConfigError("--saved_model_tags needs at least one tag (default: serve)")
    return tags


@dataclasses.dataclass(frozen=True)
class SSLConfig:
    """``--ssl_config_file``: TF Serving's ``SSLConfig`` (PEM text): the server's key and
    certificate, and with ``client_verify`` the CA whose client certificates it requires."""

    server_key: str
    server_cert: str
    custom_ca: str = ""
    client_verify: bool = False


@functools.cache
def _ssl_config_class() -> type:
    """tensorflow_serving/config/ssl_config.proto."""
    fields = (("server_key", 1, "string"), ("server_cert", 2, "string"))
    fields += (("custom_ca", 3, "string"), ("client_verify", 4, "bool"))
    return _config_proto(
        "tensorflow_serving/config/ssl_config.proto", {"SSLConfig": fields}, "SSLConfig"
    )


def check_pems(key: str = "", cert: str = "", ca: str = "") -> None:
    """Load a key with its certificate and a CA (each when given) as Python's ssl does, so
    that bad PEM text or a key of another certificate fails once, here, rather than in every
    TLS handshake. Raises ValueError with OpenSSL's reason (e.g. KEY_VALUES_MISMATCH)."""
    import ssl
    import tempfile

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        if key or cert:
            with tempfile.TemporaryDirectory() as folder:  # load_cert_chain reads files only.
                pem = Path(folder, "chain.pem")
                pem.touch(mode=0o600)
                pem.write_text(f"{key.strip()}\n{cert.strip()}\n")
                context.load_cert_chain(pem)
        if ca:
            context.load_verify_locations(cadata=ca)
    except ssl.SSLError as err:
        raise ValueError(err.reason or err.args[-1]) from None


def read_ssl_config_file(path: str | Path) -> SSLConfig:
    """A text-format ``SSLConfig`` file, e.g. ``server_key: "-----BEGIN PRIVATE KEY-----..."
    server_cert: "..."``; the key and the certificate are required, and ``client_verify``
    needs ``custom_ca`` (Python's gRPC has no default CA for client certificates)."""
    file = Path(path)
    config = _parse_strictly(_read_text(file, "SSL config"), _ssl_config_class(), str(file))
    if not config.server_key or not config.server_cert:
        raise ConfigError(f"{file}: an SSLConfig needs server_key and server_cert (PEM text)")
    if config.client_verify and not config.custom_ca:
        raise ConfigError(
            f"{file}: client_verify needs custom_ca, the CA that signs the client certificates"
        )
    return SSLConfig(config.server_key, config.server_cert, config.custom_ca, config.client_verify)
