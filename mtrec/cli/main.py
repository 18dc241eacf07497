"""The ``mtrec`` command line: data, run, inspect, report, serve, query, compile-kubeflow."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2 (tf_keras).

from mtrec import names as F
from mtrec.errors import MtrecError

if TYPE_CHECKING:  # Heavy modules are imported lazily so that --help stays instant.
    from mtrec.data.dataset import DataConfig, DatasetInfo
    from mtrec.results.inspection import Inspection
    from mtrec.results.store import RunSummary

T = TypeVar("T")

DEFAULT_OUTPUT = "mtrec_output"
log = logging.getLogger("mtrec")


# ----------------------------------------------------------------------------- helpers


def _checked(factory: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Build a config; its validation errors are the user's options, so report them plainly."""
    try:
        return factory(*args, **kwargs)
    except ValueError as err:
        raise MtrecError(str(err)) from None


def _data_config(args: argparse.Namespace) -> DataConfig:
    from mtrec.data.dataset import DataConfig

    return _checked(
        DataConfig,
        negatives_per_positive=args.negatives,
        eval_fraction=args.eval_fraction,
        valid_fraction=args.valid_fraction,
        seed=args.seed,
    )


def _build_examples(args: argparse.Namespace, output_dir: Path) -> DatasetInfo:
    """Build (or reuse) the examples for the chosen data source."""
    from mtrec.data import dataset, movielens

    config = _data_config(args)
    data_dir = output_dir / "data"
    if bool(args.train_file) != bool(args.eval_file):
        raise MtrecError(
            "--train-file and --eval-file go together "
            "(or use --interactions FILE for a time split)"
        )
    if bool(args.train_ratings) != bool(args.eval_ratings):
        raise MtrecError("--train-ratings and --eval-ratings go together")
    if args.train_ratings:
        source = Path(args.movielens_dir) if args.movielens_dir else movielens.fetch()
        return dataset.build_from_ratings(
            Path(args.train_ratings), Path(args.eval_ratings), source, data_dir, config
        )
    if args.train_file or args.interactions:
        return dataset.build_from_files(
            Path(args.train_file or args.interactions),
            Path(args.eval_file) if args.eval_file else None,
            data_dir,
            config,
        )
    source = Path(args.movielens_dir) if args.movielens_dir else movielens.fetch()
    return dataset.build_movielens(source, data_dir, config)


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("data source (default: MovieLens-100K, fetched)")
    source.add_argument(
        "--movielens-dir",
        help="local MovieLens-100K directory "
        "(GroupLens u.data/u.user/u.item or RecBole ml-100k.* layout)",
    )
    source.add_argument(
        "--interactions",
        help="your own interactions CSV/TFRecord, " "split by time (see README: data contract)",
    )
    source.add_argument(
        "--train-ratings",
        help="explicit split of MovieLens-style ratings "
        "(user_id,item_id,rating,timestamp CSV), e.g. u1.base; side features "
        "from MovieLens-100K",
    )
    source.add_argument(
        "--eval-ratings",
        help="the eval ratings of that split, e.g. u1.test " "(seen only by the Evaluator)",
    )
    source.add_argument("--train-file", help="explicit split: train interactions file")
    source.add_argument("--eval-file", help="explicit split: eval interactions file")
    rules = parser.add_argument_group("labelling and splitting")
    rules.add_argument(
        "--negatives", type=int, default=4, help="sampled non-interactions per positive (default 4)"
    )
    rules.add_argument(
        "--eval-fraction",
        type=float,
        default=0.1,
        help="most recent share of interactions held out for eval (default 0.1)",
    )
    rules.add_argument(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="most recent share of train used for early stopping (default 0.1)",
    )
    rules.add_argument("--seed", type=int, default=42)


def _configure_logging(verbose: bool) -> None:
    """Quiet by default: our own progress and errors, not TF/Beam/absl chatter."""
    # Environment first: TensorFlow and the Beam worker processes read it when they start.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if verbose else "3")
    if not verbose:
        os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        sys.unraisablehook = _ignore_tf_function_teardown
    level = logging.INFO if verbose else logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for ours in ("mtrec", "pipeline", "serving"):
        logging.getLogger(ours).setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("absl", "apache_beam", "tensorflow"):
        logging.getLogger(noisy).setLevel(level)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.ERROR)
    except ImportError:
        pass


def _ignore_tf_function_teardown(unraisable: sys.UnraisableHookArgs) -> None:
    """TF 2.16 reports harmless TypeErrors from AtomicFunction.__del__ at teardown."""
    if "AtomicFunction.__del__" not in repr(unraisable.object):
        sys.__unraisablehook__(unraisable)


# ----------------------------------------------------------------------------- commands


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from mtrec.data import movielens

    print(movielens.fetch(Path(args.cache_dir) if args.cache_dir else None))
    return 0


def cmd_data_build(args: argparse.Namespace) -> int:
    info = _build_examples(args, Path(args.output_dir))
    print(f"Examples written to {info.root}")
    print(json.dumps(info.manifest["splits"], indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from mtrec.models.hparams import ModelConfig
    from mtrec.pipeline import local_runner
    from mtrec.pipeline.config import CURATED_SCHEMA, EvalThresholds, PipelineConfig
    from mtrec.results import store as results

    output_dir = Path(args.output_dir).resolve()
    overrides = {
        k: v
        for k, v in (
            ("epochs", args.epochs),
            ("batch_size", args.batch_size),
            ("learning_rate", args.learning_rate),
            ("distribution", args.distribution),
        )
        if v is not None
    }
    model = _checked(
        ModelConfig.from_dict,
        {**ModelConfig().to_dict(), **_model_overrides(args.model_config), **overrides},
    )  # Checked before any work.
    info = _build_examples(args, output_dir)
    using_movielens = not (args.train_file or args.interactions)  # Incl. --train-ratings.
    schema = args.schema or (CURATED_SCHEMA if using_movielens and not args.infer_schema else None)
    thresholds = EvalThresholds.from_baseline(
        info.baseline_rating_rmse,
        **({"min_slice_size": args.min_slice_size} if args.min_slice_size else {}),
    )
    config = PipelineConfig(
        pipeline_name=args.pipeline_name,
        pipeline_root=str(output_dir / "pipeline_root"),
        examples_dir=info.root,
        serving_model_dir=str(output_dir / "serving_model"),
        model=model,
        thresholds=thresholds,
        gated_slices=info.slices_at_least(thresholds.min_slice_size),
        schema_path=schema,
        beam_pipeline_args=tuple(args.beam_arg)
        if args.beam_arg
        else local_runner.default_beam_args(),
        enable_cache=not args.no_cache,
    )
    log.info("Running pipeline '%s' on %s", config.pipeline_name, info.root)
    try:
        local_runner.run(config, output_dir)
    except Exception as err:  # A failed component: report its cause in one line.
        log.debug("component failure", exc_info=True)
        raise MtrecError(f"pipeline failed in a component: {_root_cause(err)}") from None
    summary = results.latest_run(
        results.open_store(local_runner.metadata_path(output_dir)), config.pipeline_name
    )
    print(format_summary(summary, info.baseline_rating_rmse))
    return 0


def _model_overrides(text: str | None) -> dict:
    """--model-config: a JSON object (or a file holding one) of ModelConfig fields."""
    if not text:
        return {}
    source = Path(text)
    raw = source.read_text() if source.is_file() else text
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as err:
        raise MtrecError(
            f"--model-config must be a JSON object or a file with one: {err}"
        ) from None
    if not isinstance(values, dict):
        raise MtrecError(
            "--model-config must be a JSON object, e.g. "
            '\'{"architecture": "mmoe", "esmm": true}\''
        )
    return values


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {err}"


def format_summary(summary: RunSummary, baseline_rmse: float | None) -> str:
    """The end-of-run report: components (and cache hits), blessing, push, metrics."""
    lines = [f"Pipeline run {summary.run_id}", f"  {'component':<32}{'state':<10}{'seconds':>8}"]
    lines += [f"  {c.node:<32}{c.state:<10}{c.seconds:>8.1f}" for c in summary.components]
    cached = summary.cached_nodes
    if cached:
        lines.append(
            f"Reused {len(cached)} cached component(s) from an earlier run: " + ", ".join(cached)
        )
    if summary.infra_blessed is not None:
        verdict = "INFRA_BLESSED" if summary.infra_blessed else "NOT infra-blessed"
        lines.append(f"ServingValidator: {verdict}: {summary.infra_reason}")
    if summary.blessed and summary.pushed_to:
        lines.append(f"Model BLESSED and pushed to {summary.pushed_to}")
    elif summary.blessed:
        lines.append("Model BLESSED but NOT pushed: the ServingValidator refused it")
    else:
        lines.append("Model NOT blessed: nothing was pushed. Failed thresholds:")
        lines += [f"  - {line}" for line in summary.failed_thresholds[:15]]
        if len(summary.failed_thresholds) > 15:
            lines.append(f"  ... and {len(summary.failed_thresholds) - 15} more")
    lines.append("Eval metrics (overall slice):")
    for head, values in summary.metrics.items():
        shown = "  ".join(f"{k}={v:.4f}" for k, v in values.items())
        lines.append(f"  {head:<9}{shown}")
    if baseline_rmse is not None:
        lines.append(
            f"  (rating baseline: predicting the training mean gives " f"RMSE {baseline_rmse:.4f})"
        )
    return "\n".join(lines)


def _load_inspection(args: argparse.Namespace) -> Inspection:
    """The evaluation named by --evaluation, or the latest evaluated run's, via MLMD."""
    from mtrec.pipeline import local_runner
    from mtrec.results import inspection
    from mtrec.results import store as results

    rule = _checked(
        inspection.FlagRule,
        auc_margin=args.auc_margin,
        rmse_ratio=args.rmse_ratio,
        min_count=args.min_count,
    )
    try:
        if args.evaluation:
            return inspection.inspect_evaluation(args.evaluation, rule=rule)
        store = results.open_store(local_runner.metadata_path(Path(args.output_dir).resolve()))
        run = results.latest_run(store, args.pipeline_name, evaluated=True)
        return inspection.inspect_evaluation(run.evaluation_uri, run=run, rule=rule)
    except (FileNotFoundError, LookupError) as err:
        raise MtrecError(f"{err.args[0] if err.args else err}") from None


def cmd_inspect(args: argparse.Namespace) -> int:
    from mtrec.results.inspection import format_text

    found = _load_inspection(args)
    print(json.dumps(found.to_json(), indent=2) if args.format == "json" else format_text(found))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mtrec.results.report import write_report

    path = write_report(_load_inspection(args), args.html)
    print(f"Report written to {path}")
    return 0


def _add_inspect_args(parser: argparse.ArgumentParser) -> None:
    from mtrec.pipeline.config import DEFAULT_PIPELINE_NAME
    from mtrec.results.inspection import FlagRule

    source = parser.add_argument_group("which evaluation (default: the latest run's, via MLMD)")
    source.add_argument(
        "--output-dir",
        default=DEFAULT_OUTPUT,
        help=f"the pipeline's output directory (default ./{DEFAULT_OUTPUT})",
    )
    source.add_argument("--pipeline-name", default=DEFAULT_PIPELINE_NAME)
    source.add_argument(
        "--evaluation",
        metavar="DIR",
        help="an Evaluator output (ModelEvaluation artifact) directory instead",
    )
    flags = parser.add_argument_group("flagging slices much worse than overall")
    rule = FlagRule()
    flags.add_argument(
        "--auc-margin",
        type=float,
        default=rule.auc_margin,
        help=f"AUC this far below overall (default {rule.auc_margin})",
    )
    flags.add_argument(
        "--rmse-ratio",
        type=float,
        default=rule.rmse_ratio,
        help=f"RMSE this many times overall (default {rule.rmse_ratio})",
    )
    flags.add_argument(
        "--min-count",
        type=int,
        default=rule.min_count,
        help=f"smallest slice that can be flagged (default {rule.min_count})",
    )


def _bool_flag(text: str) -> bool:
    """TF Serving's boolean flags: --flag, --flag=true, --flag=false."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


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
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from mtrec.serving.errors import ConfigError
    from mtrec.serving.server import ModelServer

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
    print(
        f"mtrec serve: gRPC on {args.host}:{server.grpc_port}{rest} "
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

    rows = [_json_row(text) for text in args.row or []]
    if args.input:
        rows += _read_rows(Path(args.input))
    client = ServingClient(
        args.target, args.model_name, args.version, "rest" if args.rest else "grpc", args.timeout
    )
    try:
        with client:
            if args.status:
                print(json.dumps(client.status(), indent=2))
            if args.metadata:
                print(json.dumps(client.metadata(), indent=2))
            if args.recommend is not None:
                user = _json_row(args.recommend)
                print(
                    json.dumps(
                        client.recommend(
                            user, args.k, user.pop("exclude", ()), user.pop("blend", None)
                        )
                    )
                )
            if rows:
                for row, scores in zip(
                    rows, client.predict(rows, args.signature_name), strict=True
                ):
                    print(json.dumps({**row, **scores}))
            elif not (args.status or args.metadata or args.recommend is not None):
                raise MtrecError(
                    "nothing to ask: give --row/--input, --recommend, --status " "or --metadata"
                )
    except ServingClientError as err:
        raise MtrecError(f"{args.target}: {err}") from None
    return 0


def _json_row(text: str) -> dict:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        raise MtrecError(f"--row must be a JSON object: {err}") from None
    if not isinstance(row, dict):
        raise MtrecError('--row must be a JSON object, e.g. \'{"user_id": 1, "item_id": 2}\'')
    return row


def _read_rows(path: Path) -> list[dict]:
    """Rows from a CSV with a header, or JSON lines (.jsonl/.json)."""
    import csv

    if not path.is_file():
        raise MtrecError(f"{path}: no such file")
    if path.suffix in (".jsonl", ".json"):
        return [_json_row(line) for line in path.read_text().splitlines() if line.strip()]
    with path.open(newline="") as handle:
        return [{k: _number_or_text(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _number_or_text(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _read_table(path: str, required: tuple[str, ...], what: str) -> Any:
    """A CSV as a DataFrame with ``required`` columns, or one clear error."""
    import pandas as pd

    file = Path(path)
    if not file.is_file():
        raise MtrecError(f"{file}: no such file")
    try:
        frame = pd.read_csv(file)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise MtrecError(f"{file}: not a readable CSV ({str(err).splitlines()[0]})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise MtrecError(
            f"{file}: {what} needs column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, frame.columns)) or 'none'}"
        )
    for column in (c for c in (F.USER_ID, F.ITEM_ID) if c in frame.columns):
        if not pd.api.types.is_integer_dtype(frame[column]):
            raise MtrecError(f"{file}: column '{column}' must hold integer ids")
    return frame


def _with_movielens_features(frame: Any, join: bool) -> Any:
    """Join MovieLens-100K's user and item side features by id (--join-movielens)."""
    if not join:
        return frame
    from mtrec.data import dataset, movielens

    tables = movielens.load(movielens.fetch())
    joined = dataset.join_features(frame, tables.users, tables.items)
    return joined


def _load_model(path: str) -> tuple[Path, Any]:
    from mtrec.serving import offline

    try:
        model_dir = offline.resolve_model_dir(path)
    except FileNotFoundError as err:
        raise MtrecError(str(err)) from None
    return model_dir, offline.load(model_dir)


def _write_rows(rows: list[dict], path: str) -> None:
    import pandas as pd

    from mtrec.files import staged_file

    with staged_file(path) as staging:  # Never a half-written output.
        pd.DataFrame(rows).to_csv(staging, index=False)


def cmd_score(args: argparse.Namespace) -> int:
    from mtrec.serving import offline

    pairs = _read_table(args.input, (F.USER_ID, F.ITEM_ID), "scoring")
    model_dir, model = _load_model(args.model)
    frame = _with_movielens_features(pairs, args.join_movielens)
    rows = frame.to_dict("records")
    scores = offline.score_rows(model, rows)
    _write_rows(
        [
            {F.USER_ID: int(r[F.USER_ID]), F.ITEM_ID: int(r[F.ITEM_ID]), **s}
            for r, s in zip(rows, scores, strict=True)
        ],
        args.output,
    )
    print(f"Scored {len(rows)} pairs with {model_dir}; wrote {args.output}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from mtrec.serving import offline

    if args.k < 1:
        raise MtrecError("--k must be at least 1")
    users = _read_table(args.users, (F.USER_ID,), "recommending")
    seen: dict[int, set[int]] = {}
    if args.exclude_seen:
        ratings = _read_table(args.exclude_seen, (F.USER_ID, F.ITEM_ID), "--exclude-seen")
        for user, item in zip(ratings[F.USER_ID], ratings[F.ITEM_ID], strict=True):
            seen.setdefault(int(user), set()).add(int(item))
    model_dir, model = _load_model(args.model)
    frame = users
    if args.join_movielens:
        from mtrec.data import movielens

        tables = movielens.load(movielens.fetch())
        frame = users.merge(tables.users, on=F.USER_ID, how="left", suffixes=("", "_ml"))
    try:
        rows = offline.recommend_rows(model, frame.to_dict("records"), args.k, seen)
    except ValueError as err:
        raise MtrecError(f"{model_dir}: {err}") from None
    _write_rows(rows, args.output)
    print(f"Wrote top-{args.k} items for {len(users)} users to {args.output} ({model_dir})")
    return 0


def cmd_tf_serving_config(args: argparse.Namespace) -> int:
    from mtrec.serving import config as serving_config

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = serving_config.ModelSpec(name=args.model_name, base_path=args.model_base_path)
    (out / "models.config").write_text(serving_config.model_config_text([spec]))
    serving_config.write_batching_file(serving_config.BatchingConfig(), out / "batching.config")
    print(f"Wrote {out / 'models.config'} and {out / 'batching.config'}. Serve with:")
    print(serving_config.docker_command(out, args.push_dir))
    return 0


def cmd_compile_kubeflow(args: argparse.Namespace) -> int:
    from mtrec.models.hparams import ModelConfig
    from mtrec.pipeline import kubeflow_runner
    from mtrec.pipeline.config import PipelineConfig

    root = args.pipeline_root.rstrip("/")
    config = PipelineConfig(
        pipeline_name=args.pipeline_name,
        pipeline_root=f"{root}/pipeline_root",
        model=ModelConfig(distribution=args.distribution),
        examples_dir=args.examples_dir or f"{root}/data",
        serving_model_dir=args.serving_model_dir or f"{root}/serving_model",
        beam_pipeline_args=tuple(args.beam_arg or ()),
    )
    path = kubeflow_runner.compile_pipeline(config, args.image, args.output)
    print(f"Pipeline spec written to {path} (image {args.image})")
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree; ``mtrec --help`` lists the subcommands."""
    from mtrec.models.hparams import STRATEGIES, ModelConfig
    from mtrec.pipeline.config import DEFAULT_PIPELINE_NAME

    parser = argparse.ArgumentParser(
        prog="mtrec", description="Multi-task recommender (rating, click, purchase) on TFX."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show TFX/Beam INFO logs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = commands.add_parser("data", help="fetch MovieLens-100K or build pipeline examples")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = data_commands.add_parser("fetch", help="download MovieLens-100K into the cache")
    fetch.add_argument("--cache-dir", help="default: $MTREC_CACHE_DIR or ~/.cache/mtrec")
    fetch.set_defaults(func=cmd_data_fetch)
    build = data_commands.add_parser("build", help="write labelled, split examples")
    build.add_argument("--output-dir", default=DEFAULT_OUTPUT)
    _add_data_args(build)
    build.set_defaults(func=cmd_data_build)

    run = commands.add_parser("run", help="run the whole pipeline with the local runner")
    run.add_argument(
        "--output-dir",
        default=DEFAULT_OUTPUT,
        help="pipeline root, MLMD SQLite, examples and pushed models "
        f"(default ./{DEFAULT_OUTPUT})",
    )
    run.add_argument("--pipeline-name", default=DEFAULT_PIPELINE_NAME)
    _add_data_args(run)
    run.add_argument("--epochs", type=int, help=f"default {ModelConfig.epochs}")
    run.add_argument("--batch-size", type=int, help=f"default {ModelConfig.batch_size}")
    run.add_argument(
        "--learning-rate",
        type=float,
        help=f"Adam learning rate (default {ModelConfig.learning_rate})",
    )
    run.add_argument(
        "--model-config",
        metavar="JSON",
        help="model options as a JSON object or file, e.g. "
        '\'{"architecture": "mmoe", "loss_balancing": "uncertainty", '
        '"esmm": true}\' (see models/hparams.py)',
    )
    run.add_argument(
        "--distribution",
        choices=STRATEGIES,
        help="tf.distribute strategy for the Trainer (default: default)",
    )
    run.add_argument(
        "--min-slice-size",
        type=int,
        help="smallest slice (eval examples) whose metrics are gated; every "
        "slice is reported (default 1000)",
    )
    run.add_argument("--schema", help="schema.pbtxt to import instead of the default")
    run.add_argument(
        "--infer-schema",
        action="store_true",
        help="infer the schema with SchemaGen instead of the curated one",
    )
    run.add_argument(
        "--beam-arg",
        action="append",
        metavar="ARG",
        help="Beam pipeline option, repeatable (replaces the DirectRunner default), "
        "e.g. --beam-arg=--runner=FlinkRunner",
    )
    run.add_argument("--no-cache", action="store_true", help="re-run every component")
    run.set_defaults(func=cmd_run)

    inspect = commands.add_parser(
        "inspect", help="print blessing, thresholds and metrics per head and slice"
    )
    _add_inspect_args(inspect)
    inspect.add_argument("--format", choices=("text", "json"), default="text")
    inspect.set_defaults(func=cmd_inspect)

    report = commands.add_parser("report", help="write a self-contained HTML report")
    report.add_argument(
        "--html", required=True, metavar="OUT", help="the report file to write, e.g. report.html"
    )
    _add_inspect_args(report)
    report.set_defaults(func=cmd_report)

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
    serve.add_argument(
        "--enable_batching",
        type=_bool_flag,
        nargs="?",
        const=True,
        default=False,
        help="merge concurrent requests into one model call",
    )
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
        "--grpc_max_threads", type=int, default=16, help="gRPC request threads (default 16)"
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
    query.add_argument("--input", help="rows as CSV with a header, or JSON lines")
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
    query.set_defaults(func=cmd_query)

    score = commands.add_parser("score", help="score user_id,item_id pairs with a pushed model")
    score.add_argument(
        "--model",
        default=f"{DEFAULT_OUTPUT}/serving_model",
        help="a pushed version folder, or the push folder (its latest version)",
    )
    score.add_argument(
        "--input",
        required=True,
        help="CSV with user_id,item_id (and any "
        "feature columns: age, gender, occupation, zip_prefix, genres, year, "
        "title)",
    )
    score.add_argument("--output", required=True, help="CSV to write")
    score.add_argument(
        "--join-movielens",
        action="store_true",
        help="add MovieLens-100K's user and item features by id",
    )
    score.set_defaults(func=cmd_score)

    recommend = commands.add_parser("recommend", help="top-k items per user, with head scores")
    recommend.add_argument(
        "--model",
        default=f"{DEFAULT_OUTPUT}/serving_model",
        help="a pushed version folder, or the push folder",
    )
    recommend.add_argument(
        "--users",
        required=True,
        help="CSV with user_id (and any of age, gender, occupation, " "zip_prefix)",
    )
    recommend.add_argument("--k", type=int, default=10)
    recommend.add_argument(
        "--exclude-seen",
        metavar="RATINGS",
        help="CSV of user_id,item_id[,...]: items each user already has",
    )
    recommend.add_argument("--output", required=True, help="CSV to write")
    recommend.add_argument(
        "--join-movielens", action="store_true", help="add MovieLens-100K's user features by id"
    )
    recommend.set_defaults(func=cmd_recommend)

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

    kfp = commands.add_parser(
        "compile-kubeflow", help="compile the pipeline to a Kubeflow/Vertex pipeline spec"
    )
    kfp.add_argument("--image", required=True, help="container image with mtrec installed")
    kfp.add_argument("--pipeline-root", required=True, help="e.g. gs://bucket/mtrec")
    kfp.add_argument("--examples-dir", help="default: <pipeline-root>/data")
    kfp.add_argument("--serving-model-dir", help="default: <pipeline-root>/serving_model")
    kfp.add_argument(
        "--distribution",
        choices=STRATEGIES,
        default="multi_worker_mirrored",
        help="tf.distribute strategy for the Trainer; the cluster comes from "
        "TF_CONFIG (default: multi_worker_mirrored)",
    )
    kfp.add_argument("--pipeline-name", default=DEFAULT_PIPELINE_NAME)
    kfp.add_argument("--beam-arg", action="append", metavar="ARG")
    kfp.add_argument("--output", default="kubeflow_pipeline.json")
    kfp.set_defaults(func=cmd_compile_kubeflow)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: one clear line and exit code 2 for a user-fixable error."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return args.func(args)
    except MtrecError as err:
        print(f"mtrec: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
