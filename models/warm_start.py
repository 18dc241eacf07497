"""Warm start: carry a trained model's weights into the next one, table rows by token.

Continuous training retrains on each new span of logs, and the span's Transform
vocabularies differ from the last: new users and items appear and frequency order shifts,
so row ``i`` of a table means another token. The Trainer therefore writes a bundle beside
its serving model (every weight, the config, and the vocabularies its tables are indexed
by), and the next Trainer maps each vocabulary-indexed table by token: a known token keeps
its learned row, a new one keeps the fresh initialiser's, the OOV bucket(s) keep theirs.
Every other weight is copied as is when both models' weights agree in order, name and shape.

Bundle layout, ``<Model artifact uri>/warm_start/`` beside ``Format-Serving`` (the Pusher
copies only that, so the bundle is never served):

- ``manifest.json``: ``{"format": 1, "config": <ModelConfig dict>, "weights": [{"name",
  "shape", "dtype", "vocabulary": <vocabulary name> | null}, ...]}`` in ``model.weights`` order.
- ``weights.npz``: one array per weight, keyed by its index (``"0"``, ``"1"``, ...).
- ``vocabularies.json``: ``{<vocabulary name>: [token, ...]}`` for each vocabulary a table
  uses (tokens as UTF-8 text; undecodable bytes as surrogate escapes).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import tensorflow as tf

from mtrec import names as F
from mtrec.models.model import MultiTaskRecommender

log = logging.getLogger(__name__)

BUNDLE_DIR = "warm_start"
MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
VOCABULARIES = "vocabularies.json"
FORMAT = 1
# Config fields that change which weights exist or their shapes (or, for esmm, what the
# purchase head predicts); a base model that differs in one is not restored.
SHAPE_FIELDS = (
    "embedding_dim",
    "side_dim",
    "architecture",
    "head_units",
    "rating_biases",
    "history",
    "esmm",
    "loss_balancing",
)
ARCHITECTURE_FIELDS = {
    "shared_bottom": ("bottom_units",),
    "mmoe": ("experts.num_experts", "experts.units"),
    "ple": ("experts.levels", "experts.shared_experts", "experts.task_experts", "experts.units"),
}


class Vocabularies(Protocol):
    """What restore and save_bundle need of a ``tft.TFTransformOutput``."""

    def vocabulary_by_name(self, vocab_filename: str) -> Sequence[bytes | str]: ...


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """What a restore did: whether it warm-started from ``base_model`` and, per vocabulary,
    how many tokens kept their learned rows (``carried``) or started fresh (``new``); or the
    one-line ``reason`` it did not."""

    base_model: str
    warm_started: bool
    reason: str = ""
    carried: dict[str, int] = dataclasses.field(default_factory=dict)
    new: dict[str, int] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        """The log line, e.g. ``Warm start from <path>: user_id 940 rows carried, 5 new;
        item_id 1680 rows carried, 2 new; ...``."""
        if not self.warm_started:
            return f"No warm start from {self.base_model}: {self.reason}; training from scratch"
        parts = [
            f"{name} {self.carried[name]} rows carried, {self.new[name]} new"
            for name in self.carried
        ]
        return f"Warm start from {self.base_model}: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _MismatchError(ValueError):
    """The bundle and the model do not fit together; the message says why."""


# What reading a damaged or partly copied bundle can raise: storage errors, bad JSON
# (ValueError), a truncated or foreign .npz, a manifest missing a key or of the wrong type.
_READ_ERRORS = (
    tf.errors.OpError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    zipfile.BadZipFile,
)


@dataclasses.dataclass(frozen=True)
class _Bundle:
    config: dict[str, Any]
    entries: list[dict[str, Any]]
    arrays: list[np.ndarray]
    vocabularies: dict[str, list[bytes]]


def bundle_dir(base_model_path: str) -> str:
    """The bundle beside a serving model path (``<artifact uri>/Format-Serving``)."""
    return os.path.join(os.path.dirname(base_model_path.rstrip("/")), BUNDLE_DIR)


def save_bundle(model: MultiTaskRecommender, tft_output: Vocabularies, directory: str) -> None:
    """Write ``model``'s warm-start bundle to ``directory`` (local or gs://), replacing any:
    written to a sibling temporary folder first, then renamed into place."""
    tables = {variable.ref(): name for variable, name in model.vocabulary_variables()}
    vocabularies = {name: _tokens(tft_output, name) for name in _ordered(set(tables.values()))}
    entries, arrays = [], {}
    for index, variable in enumerate(model.weights):
        value = np.asarray(variable.numpy())
        vocabulary = tables.get(variable.ref())
        if vocabulary is not None and value.shape[0] < len(vocabularies[vocabulary]):
            raise ValueError(
                f"{variable.name} has {value.shape[0]} rows, fewer than the "
                f"{len(vocabularies[vocabulary])} tokens of vocabulary {vocabulary!r}"
            )
        entries.append(
            {
                "name": variable.name,
                "shape": list(value.shape),
                "dtype": value.dtype.name,
                "vocabulary": vocabulary,
            }
        )
        arrays[str(index)] = value
    manifest = {"format": FORMAT, "config": model.config.to_dict(), "weights": entries}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)

    parent, name = os.path.split(directory.rstrip("/"))
    staging = os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
    tf.io.gfile.makedirs(staging)
    _write(os.path.join(staging, WEIGHTS), buffer.getvalue())
    text = {k: [t.decode("utf-8", "surrogateescape") for t in v] for k, v in vocabularies.items()}
    _write(os.path.join(staging, VOCABULARIES), json.dumps(text).encode())
    _write(os.path.join(staging, MANIFEST), json.dumps(manifest, indent=1).encode())
    if tf.io.gfile.exists(directory):
        tf.io.gfile.rmtree(directory)
    tf.io.gfile.rename(staging, directory)
    log.info(
        "Warm-start bundle: %d weights, vocabularies %s -> %s",
        len(entries),
        list(vocabularies),
        directory,
    )


def restore(
    model: MultiTaskRecommender, tft_output: Vocabularies, base_model_path: str
) -> WarmStart:
    """Restore the bundle beside ``base_model_path`` into ``model`` (built, e.g. with
    ``build_weights``), mapping table rows by token; logs and returns what it did. When the
    bundle is missing, unreadable or does not fit the model, nothing is assigned and the
    report says why: the caller trains from scratch rather than fail."""
    directory = bundle_dir(base_model_path)
    try:
        bundle = _read(directory)
    except _READ_ERRORS as error:
        return _reported(_skipped(base_model_path, f"unreadable bundle {directory}: {error}"))
    if bundle is None:
        return _reported(_skipped(base_model_path, f"no warm-start bundle beside it ({directory})"))
    try:
        values, carried, new = _plan(model, tft_output, bundle)
    except _MismatchError as error:
        return _reported(_skipped(base_model_path, str(error)))
    for variable, value in zip(model.weights, values, strict=True):
        variable.assign(value)
    return _reported(WarmStart(base_model_path, True, carried=carried, new=new))


def map_rows(
    base: np.ndarray, base_tokens: Sequence[bytes], fresh: np.ndarray, tokens: Sequence[bytes]
) -> tuple[np.ndarray, int]:
    """``fresh`` (rows: ``tokens``, then OOV buckets) with every row whose token is in
    ``base_tokens`` replaced by that token's ``base`` row, and the OOV rows by ``base``'s
    OOV rows; also returns how many tokens were carried over."""
    base_oov, oov = base.shape[0] - len(base_tokens), fresh.shape[0] - len(tokens)
    if base_oov != oov or oov < 0 or base.shape[1:] != fresh.shape[1:]:
        raise _MismatchError(
            f"rows do not match the vocabularies: {base.shape} for {len(base_tokens)} tokens "
            f"in the base model, {fresh.shape} for {len(tokens)} here"
        )
    index = {token: row for row, token in enumerate(base_tokens)}
    pairs = [(row, index[token]) for row, token in enumerate(tokens) if token in index]
    value = np.array(fresh, copy=True)
    if pairs:
        rows, base_rows = (list(column) for column in zip(*pairs, strict=True))
        value[rows] = base[base_rows]
    value[len(tokens) :] = base[len(base_tokens) :]
    return value, len(pairs)


def _plan(
    model: MultiTaskRecommender, tft_output: Vocabularies, bundle: _Bundle
) -> tuple[list[np.ndarray], dict[str, int], dict[str, int]]:
    """The value of every model weight after the restore, and the rows carried / new per
    vocabulary; raises _MismatchError when the bundle does not fit the model."""
    base, here = _structure(bundle.config), _structure(model.config.to_dict())
    changed = [
        f"{key} {here[key]} (base model: {base[key]})" for key in here if base[key] != here[key]
    ]
    if changed:
        raise _MismatchError("config differs from the base model's: " + ", ".join(changed))
    weights = model.weights
    if len(weights) != len(bundle.entries):
        raise _MismatchError(
            f"the base model has {len(bundle.entries)} weights, this one {len(weights)} "
            "(is the model built?)"
        )
    tables = {variable.ref(): name for variable, name in model.vocabulary_variables()}
    tokens = {name: _tokens(tft_output, name) for name in _ordered(set(tables.values()))}
    carried: dict[str, int] = {}
    values = []
    for index, (variable, entry, array) in enumerate(
        zip(weights, bundle.entries, bundle.arrays, strict=True)
    ):
        vocabulary = tables.get(variable.ref())
        if _normalised(variable.name) != _normalised(entry["name"]):
            raise _MismatchError(
                f"weight {index} is {variable.name} here, {entry['name']} in the base model"
            )
        if vocabulary != entry["vocabulary"]:
            raise _MismatchError(
                f"weight {index} ({variable.name}) is indexed by vocabulary {vocabulary} here, "
                f"by {entry['vocabulary']} in the base model"
            )
        if vocabulary is None:
            if tuple(array.shape) != tuple(variable.shape):
                raise _MismatchError(
                    f"weight {index} ({variable.name}) has shape {tuple(variable.shape)} here, "
                    f"{tuple(array.shape)} in the base model"
                )
            values.append(array)
            continue
        if vocabulary not in bundle.vocabularies:
            raise _MismatchError(f"the bundle lacks vocabulary {vocabulary!r}")
        try:
            value, count = map_rows(
                array, bundle.vocabularies[vocabulary], variable.numpy(), tokens[vocabulary]
            )
        except _MismatchError as error:
            raise _MismatchError(f"{variable.name}: {error}") from error
        carried[vocabulary] = count
        values.append(value)
    carried = {name: carried[name] for name in tokens}  # In the log line's order.
    return values, carried, {name: len(tokens[name]) - carried[name] for name in tokens}


def _read(directory: str) -> _Bundle | None:
    """The bundle in ``directory``, or None when there is none."""
    manifest_path = os.path.join(directory, MANIFEST)
    if not tf.io.gfile.exists(manifest_path):
        return None
    manifest = json.loads(_read_bytes(manifest_path))
    if manifest.get("format") != FORMAT:
        raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT}")
    entries = manifest["weights"]
    with np.load(io.BytesIO(_read_bytes(os.path.join(directory, WEIGHTS)))) as npz:
        arrays = [npz[str(index)] for index in range(len(entries))]
    for index, (entry, array) in enumerate(zip(entries, arrays, strict=True)):
        if list(array.shape) != list(entry["shape"]):
            raise ValueError(
                f"array {index} has shape {array.shape}, the manifest {entry['shape']}"
            )
    text = json.loads(_read_bytes(os.path.join(directory, VOCABULARIES)))
    vocabularies = {
        name: [token.encode("utf-8", "surrogateescape") for token in tokens]
        for name, tokens in text.items()
    }
    return _Bundle(manifest["config"], entries, arrays, vocabularies)


def _structure(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config fields that decide the model's weights (see SHAPE_FIELDS), flattened."""
    flat = dict(config)
    for nested in ("experts", "retrieval"):
        flat.update({f"{nested}.{k}": v for k, v in (config.get(nested) or {}).items()})
    keys = [
        *SHAPE_FIELDS,
        *ARCHITECTURE_FIELDS.get(flat.get("architecture"), ()),
        "retrieval.enabled",
    ]
    if flat.get("retrieval.enabled"):
        keys.append("retrieval.dim")
    structure = {key: flat.get(key) for key in keys}
    if flat.get("history"):  # Bundles from before history_pooling pooled by the mean.
        structure["history_pooling"] = flat.get("history_pooling") or "mean"
    if not flat.get("retrieval.enabled"):  # Then log p(item) exists for the listwise loss only.
        structure["click_listwise_weight > 0"] = (flat.get("click_listwise_weight") or 0) > 0
    return structure


def _normalised(name: str) -> str:
    """A variable name without Keras's per-process uniquifying suffixes (``dense_7`` ->
    ``dense``) or the ``:0`` output index, comparable across processes."""
    parts = name.split(":")[0].split("/")
    return "/".join(re.sub(r"_\d+$", "", part) for part in parts)


def _ordered(vocabularies: set[str]) -> list[str]:
    """User and item ids first (what the log line leads with), then the rest by name."""
    first = [name for name in (F.USER_ID, F.ITEM_ID) if name in vocabularies]
    return first + sorted(vocabularies - set(first))


def _tokens(tft_output: Vocabularies, name: str) -> list[bytes]:
    return [
        token if isinstance(token, bytes) else str(token).encode("utf-8", "surrogateescape")
        for token in tft_output.vocabulary_by_name(name)
    ]


def _skipped(base_model: str, reason: str) -> WarmStart:
    return WarmStart(base_model, False, reason=reason)


def _reported(result: WarmStart) -> WarmStart:
    """Log ``result``'s line (a warning when there was no warm start) and return it."""
    (log.info if result.warm_started else log.warning)(result.summary())
    return result


def _write(path: str, data: bytes) -> None:
    with tf.io.gfile.GFile(path, "wb") as out:
        out.write(data)


def _read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as source:
        return source.read()
