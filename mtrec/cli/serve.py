"""`mtrec serve`, `mtrec query` and `mtrec tf-serving-config`: TF Serving's APIs."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from mtrec.cli.common import DEFAULT_OUTPUT, log
from mtrec.cli.rows import FORMATS_HELP, RowFile
from mtrec.errors import MtrecError


def _bool_flag(text: str) -> bool:
    """TF Serving's boolean flags: --flag, --flag=true, --flag=false."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def _switch(parser: argparse.ArgumentParser, flag: str, default: bool, help: str) -> None:
    """A TF Serving boolean flag: ``--flag``, ``--flag=true`` or ``--flag=false``."""
    parser.add_argument(flag, type=_bool_flag, nargs="?", const=True, default=default, help=help)


def _server_options(args: argparse.Namespace) -> Any:
    from mtrec.serving import config as serving_config
    from mtrec.serving.server import ServerOptions

    if args.model_config_file:
        models = serving_config.read_model_config_file(args.model_config_file)
    else:
        if not Path(args.model_base_path).is_dir():
            raise serving_config.ConfigError(
                f"{args.model_base_path}: no such model base path (run the pipeline first, "
                "or pass --model_base_path)"
            )
        models = serving_config.single_model(args.model_name, args.model_base_path)
    batching = None
    if args.batching_parameters_file and not args.enable_batching:
        raise serving_config.ConfigError(  # TF Serving's start-up error (server.cc).
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    if args.enable_batching:
        batching = (
            serving_config.read_batching_file(args.batching_parameters_file)
            if args.batching_parameters_file
            else serving_config.BatchingConfig()
        )
    return ServerOptions(
        models=tuple(models),
        port=args.port,
        rest_api_port=args.rest_api_port or None,
        host=args.host,
        batching=batching,
        poll_seconds=args.file_system_poll_wait_seconds,
        max_request_bytes=args.max_request_bytes,
        grpc_workers=args.grpc_max_threads,
        rest_api_timeout_ms=args.rest_api_timeout_in_ms,
        rest_api_num_threads=args.rest_api_num_threads,
        enable_model_warmup=args.enable_model_warmup,
        num_request_iterations_for_warmup=args.num_request_iterations_for_warmup,
        max_num_load_retries=args.max_num_load_retries,
        load_retry_interval_micros=args.load_retry_interval_micros,
        model_config_file=args.model_config_file,
        config_poll_seconds=args.model_config_file_poll_wait_seconds,
        monitoring_config_file=args.monitoring_config_file,
        parallelism=serving_config.parallelism(
            args.tensorflow_session_parallelism,
            args.tensorflow_intra_op_parallelism,
            args.tensorflow_inter_op_parallelism,
        ),
        grpc_socket_path=args.grpc_socket_path or None,
        grpc_channel_arguments=serving_config.parse_channel_arguments(args.grpc_channel_arguments),
        saved_model_tags=serving_config.parse_tags(args.saved_model_tags),
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        rest_api_enable_cors_support=args.rest_api_enable_cors_support,
        ssl=serving_config.read_ssl_config_file(args.ssl_config_file)
        if args.ssl_config_file
        else None,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from mtrec.serving.errors import ConfigError
    from mtrec.serving.server import ModelServer, versions_text

    if args.version:  # As tensorflow_model_server --version.
        print(versions_text())
        return 0
    try:
        server = ModelServer(_server_options(args)).start()
    except ConfigError as err:
        raise MtrecError(str(err)) from None
    for spec in server.options.models:
        versions = server.manager.available(spec.name)
        log.info(
            "model '%s' from %s: serving versions %s",
            spec.name,
            spec.base_path,
            versions or "none yet (polling)",
        )
    rest = f", REST on {args.host}:{server.rest_port}" if server.rest_port else ""
    if server.rest_port and server.monitoring.enable:
        rest += f" (metrics at {server.monitoring.path})"
    if server.options.grpc_socket_path:
        rest = f" and unix:{server.options.grpc_socket_path}{rest}"
    tls = " with TLS" if server.options.ssl else ""
    print(
        f"mtrec serve: gRPC{tls} on {args.host}:{server.grpc_port}{rest} "
        f"(batching {'on' if server.batcher else 'off'}); SIGTERM or Ctrl-C stops",
        flush=True,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    print("mtrec serve: stopping; finishing in-flight requests", flush=True)
    server.stop(grace=args.shutdown_grace_seconds)
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from mtrec.serving.client import ServingClient, ServingClientError

    rows = [(f"--row {i}", json_row(text)) for i, text in enumerate(args.row or [], 1)]
    if args.input:
        source = RowFile(args.input, (), "querying")
        rows += [(source.where(number), row) for number, row in source.rows()]
    client = ServingClient(
        args.target,
        args.model_name,
        args.version,
        "rest" if args.rest else "grpc",
        args.timeout,
        credentials=_tls_credentials(args),
    )
    try:
        with client:
            if args.status:
                print(json.dumps(client.status(), indent=2))
            if args.metadata:
                print(json.dumps(client.metadata(), indent=2))
            if args.recommend is not None:
                user = json_row(args.recommend, "--recommend")
                print(
                    json.dumps(
                        client.recommend(
                            user, args.k, user.pop("exclude", ()), user.pop("blend", None)
                        )
                    )
                )
            if rows:
                typed = typed_rows(rows, client.signatures())
                for row, scores in zip(
                    typed, client.predict(typed, args.signature_name), strict=True
                ):
                    print(json.dumps({**row, **scores}))
            elif not (args.status or args.metadata or args.recommend is not None):
                raise MtrecError(
                    "nothing to ask: give --row/--input, --recommend, --status or --metadata"
                )
    except ServingClientError as err:
        hint = ""
        if client.credentials is None and str(err).endswith("Socket closed"):
            # What a plain-text channel gets from a server that speaks TLS.
            hint = " (a server with --ssl_config_file speaks TLS: pass --ca_cert)"
        raise MtrecError(f"{args.target}: {err}{hint}") from None
    return 0


def _tls_credentials(args: argparse.Namespace) -> Any:
    """gRPC over TLS to a server started with --ssl_config_file: the CA that signed its
    certificate, and this client's key and certificate where the server verifies clients."""
    if not (args.ca_cert or args.client_cert or args.client_key):
        return None
    if args.rest:
        raise MtrecError("--ca_cert, --client_cert and --client_key are for gRPC (REST is plain)")
    if bool(args.client_cert) != bool(args.client_key):
        raise MtrecError("--client_cert and --client_key go together")
    import grpc

    from mtrec.serving.config import check_pems

    pems = []
    for flag, path in (
        ("--ca_cert", args.ca_cert),
        ("--client_key", args.client_key),
        ("--client_cert", args.client_cert),
    ):
        try:
            pems.append(Path(path).read_bytes() if path else None)
        except OSError as err:
            raise MtrecError(f"{flag} {path}: {err.strerror}") from None
        if path and not pems[-1].strip():
            raise MtrecError(f"{flag} {path}: the file is empty")
    ca, key, cert = (pem.decode("ascii", "replace") if pem else "" for pem in pems)
    # Checked here: gRPC takes bad PEM without a word and fails each connection vaguely.
    try:
        check_pems(ca=ca)
    except ValueError as err:
        raise MtrecError(f"--ca_cert {args.ca_cert}: not a PEM certificate ({err})") from None
    try:
        check_pems(key, cert)
    except ValueError as err:
        raise MtrecError(
            f"--client_key {args.client_key} and --client_cert {args.client_cert}: not valid "
            f"PEM, or the key does not match the certificate ({err})"
        ) from None
    return grpc.ssl_channel_credentials(*pems)


def typed_rows(rows: list[tuple[str, dict]], signatures: dict) -> list[dict]:
    """Each row's features typed by the served model's raw feature spec (a zip prefix "551"
    stays a string), never by their look; other columns pass as given. A model without
    that spec (not an mtrec model) gets CSV values typed by their look."""
    from mtrec.serving import offline

    spec = offline.served_feature_spec(signatures)
    typed = []
    for where, row in rows:
        if spec is None:
            typed.append(
                {k: _number_or_text(v) if isinstance(v, str) else v for k, v in row.items()}
            )
            continue
        known = {key: spec[key] for key in row if key in spec}
        typed.append({**row, **offline.coerce_row(row, known, where)})
    return typed


def json_row(text: str, where: str = "--row") -> dict:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        raise MtrecError(f"{where} must be a JSON object: {err}") from None
    if not isinstance(row, dict):
        raise MtrecError(f'{where} must be a JSON object, e.g. \'{{"user_id": 1, "item_id": 2}}\'')
    return row


def _number_or_text(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def cmd_tf_serving_config(args: argparse.Namespace) -> int:
    from mtrec.files import output_folder
    from mtrec.serving import config as serving_config

    out = output_folder(args.output_dir)
    spec = serving_config.ModelSpec(name=args.model_name, base_path=args.model_base_path)
    (out / "models.config").write_text(serving_config.model_config_text([spec]))
    serving_config.write_batching_file(serving_config.BatchingConfig(), out / "batching.config")
    print(f"Wrote {out / 'models.config'} and {out / 'batching.config'}. Serve with:")
    print(serving_config.docker_command(out, args.push_dir, args.model_base_path))
    return 0


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """serve, query, tf-serving-config."""
    serve = commands.add_parser(
        "serve", help="serve pushed models over TF Serving's gRPC and REST APIs"
    )
    serve.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    serve.add_argument(
        "--rest_api_port", type=int, default=8501, help="REST port (default 8501; 0 turns REST off)"
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)"
    )
    serve.add_argument("--model_name", default="mtrec")
    serve.add_argument(
        "--model_base_path",
        default=f"{DEFAULT_OUTPUT}/serving_model",
        help="folder of numbered versions (default: the pipeline's pushes)",
    )
    serve.add_argument(
        "--model_config_file",
        help="text ModelServerConfig: several models, version policies, labels",
    )
    _switch(serve, "--enable_batching", False, "merge concurrent requests into one model call")
    serve.add_argument("--batching_parameters_file", help="text BatchingParameters")
    serve.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="how often base paths are polled for new versions (default 1)",
    )
    serve.add_argument(
        "--max_request_bytes",
        type=int,
        default=16 * 1024 * 1024,
        help="larger requests get RESOURCE_EXHAUSTED (default 16 MiB)",
    )
    serve.add_argument(
        "--grpc_max_threads",
        type=int,
        default=16,
        help="threads for gRPC calls other than Predict, and for concurrent unbatched "
        "Predict model calls (a Predict waits on the event loop; default 16)",
    )
    serve.add_argument(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=0,
        help="how often --model_config_file is re-read and applied (default 0: never)",
    )
    serve.add_argument(
        "--rest_api_timeout_in_ms",
        type=int,
        default=30000,
        help="a REST connection idle or stalled this long is closed (default 30000)",
    )
    serve.add_argument(
        "--rest_api_num_threads",
        type=int,
        default=4 * (os.cpu_count() or 1),
        help="REST requests processed at once (default 4 per CPU)",
    )
    _switch(
        serve,
        "--enable_model_warmup",
        True,
        "replay assets.extra/tf_serving_warmup_requests before serving (default true)",
    )
    serve.add_argument(
        "--num_request_iterations_for_warmup",
        type=int,
        default=0,
        help="times each warmup record runs (default 0: once)",
    )
    serve.add_argument(
        "--max_num_load_retries",
        type=int,
        default=5,
        help="retries of a version that failed to load (default 5)",
    )
    serve.add_argument(
        "--load_retry_interval_micros",
        type=int,
        default=60_000_000,
        help="between load retries (default 60000000: a minute)",
    )
    serve.add_argument(
        "--monitoring_config_file",
        help="text MonitoringConfig; with prometheus_config { enable: true } the REST port "
        "serves Prometheus metrics at its path (default /monitoring/prometheus/metrics)",
    )
    for pool, what in (
        ("session", "both of TensorFlow's thread pools, unless the next two are set"),
        ("intra_op", "threads that parallelize one op"),
        ("inter_op", "ops run at once"),
    ):
        serve.add_argument(
            f"--tensorflow_{pool}_parallelism",
            type=int,
            default=0,
            help=f"{what} (default 0: chosen by TensorFlow)",
        )
    serve.add_argument("--grpc_socket_path", default="", help="also serve gRPC on this UNIX socket")
    serve.add_argument(
        "--grpc_channel_arguments",
        default="",
        help="comma-separated key=value gRPC server arguments, e.g. "
        "grpc.max_connection_age_ms=2000 (they replace the server's own)",
    )
    _switch(
        serve,
        "--rest_api_enable_cors_support",
        False,
        "CORS headers (any origin, POST and GET) on REST API answers",
    )
    _switch(
        serve,
        "--allow_version_labels_for_unavailable_models",
        False,
        "let a new version label point at a version that has not loaded (yet)",
    )
    serve.add_argument(
        "--ssl_config_file",
        help="text SSLConfig (server_key, server_cert, custom_ca, client_verify): TLS on the "
        "gRPC port and socket",
    )
    serve.add_argument(
        "--saved_model_tags",
        default="serve",
        help="comma-separated tags of the MetaGraph to load (default serve)",
    )
    serve.add_argument(
        "--version", action="store_true", help="print the server's versions and exit"
    )
    serve.add_argument("--shutdown_grace_seconds", type=float, default=10.0)
    serve.set_defaults(func=cmd_serve)

    query = commands.add_parser("query", help="ask a TF Serving compatible server for scores")
    query.add_argument(
        "--target", default="localhost:8500", help="host:port (gRPC; with --rest, the REST port)"
    )
    query.add_argument("--rest", action="store_true", help="use REST instead of gRPC")
    query.add_argument("--model_name", default="mtrec")
    query.add_argument("--version", type=int)
    query.add_argument(
        "--row",
        action="append",
        metavar="JSON",
        help='features of one example, e.g. \'{"user_id": 1, "item_id": 50}\'',
    )
    query.add_argument(
        "--input",
        help=f"rows: {FORMATS_HELP}; features are typed by the served model's raw feature "
        "spec (a zip_prefix 551 stays a string)",
    )
    query.add_argument("--signature_name", default="serving_default")
    query.add_argument(
        "--recommend",
        metavar="JSON",
        help='a user to recommend items for, e.g. \'{"user_id": 5, '
        '"exclude": [1, 2]}\' (optional "blend": [w_rating, w_click, '
        "w_purchase])",
    )
    query.add_argument("--k", type=int, default=10)
    query.add_argument("--status", action="store_true", help="print the versions' status")
    query.add_argument("--metadata", action="store_true", help="print the signatures")
    query.add_argument("--timeout", type=float, default=10.0)
    query.add_argument(
        "--ca_cert", help="PEM file of the CA that signed a TLS server's certificate (gRPC)"
    )
    query.add_argument("--client_cert", help="PEM certificate for a server that verifies clients")
    query.add_argument("--client_key", help="PEM key of --client_cert")
    query.set_defaults(func=cmd_query)

    tfs = commands.add_parser(
        "tf-serving-config",
        help="write models.config and batching.config for "
        "tensorflow_model_server, and print the docker command",
    )
    tfs.add_argument("--output-dir", default="tf_serving")
    tfs.add_argument("--model_name", default="mtrec")
    tfs.add_argument(
        "--model_base_path",
        default="/models/mtrec",
        help="the push folder as mounted in the container",
    )
    tfs.add_argument(
        "--push-dir", default=f"{DEFAULT_OUTPUT}/serving_model", help="the push folder on the host"
    )
    tfs.set_defaults(func=cmd_tf_serving_config)
