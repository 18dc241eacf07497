"""Scoring and recommending with a pushed SavedModel in process (`mtrec score`,
`mtrec recommend`): the same signatures a server would call, over files of rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mtrec import names as F
from mtrec.serving.manager import version_folders

SCORE_BATCH = 4096


def resolve_model_dir(path: str | Path) -> Path:
    """A version folder as is; a push base folder means its newest numbered version."""
    folder = Path(path)
    if (folder / F.SAVED_MODEL_FILE).is_file():
        return folder
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder")
    versions = version_folders(folder)
    if not versions:
        raise FileNotFoundError(
            f"{folder}: neither a SavedModel nor a folder of numbered " "versions"
        )
    return versions[max(versions)]


def load(model_dir: Path) -> Any:
    import tensorflow as tf

    return tf.saved_model.load(str(model_dir))


def score_rows(model: Any, rows: list[Mapping[str, Any]]) -> list[dict[str, float]]:
    """rating, click and purchase for each row of raw features (ids at least)."""
    import tensorflow as tf

    from mtrec.examples import to_examples

    signature = model.signatures[F.SERVING_DEFAULT]
    scores: list[dict[str, float]] = []
    for start in range(0, len(rows), SCORE_BATCH):
        chunk = [
            {k: v for k, v in row.items() if k in F.MODEL_INPUT_KEYS}
            for row in rows[start : start + SCORE_BATCH]
        ]
        outputs = signature(examples=tf.constant(to_examples(chunk)))
        values = {head: outputs[head].numpy() for head in F.HEADS}
        scores += [{head: float(values[head][i]) for head in F.HEADS} for i in range(len(chunk))]
    return scores


def recommend_rows(
    model: Any,
    users: Iterable[Mapping[str, Any]],
    k: int,
    seen: Mapping[int, set[int]] | None = None,
) -> list[dict[str, Any]]:
    """Top-k rows (user_id, rank, item_id, score and the three heads) for every user."""
    import tensorflow as tf

    if F.RECOMMEND not in model.signatures:
        raise ValueError("the model has no 'recommend' signature: export it with a newer mtrec")
    signature = model.signatures[F.RECOMMEND]
    specs = signature.structured_input_signature[1]
    out = []
    for user in users:
        user_id = int(user[F.USER_ID])
        inputs = {}
        for name, spec in specs.items():
            if name == "k":
                value = [k]
            elif name == "exclude":
                value = sorted((seen or {}).get(user_id, ()))
            elif name == "blend":
                value = []
            elif name in user and user[name] not in ("", None):
                value = [user[name]]
            else:
                value = []  # Missing: the signature's neutral default.
            inputs[name] = tf.constant(
                np.array(value, dtype=spec.dtype.as_numpy_dtype)
                if spec.dtype != tf.string
                else [str(v).encode() for v in value],
                spec.dtype,
            )
        result = {key: value.numpy() for key, value in signature(**inputs).items()}
        for rank, item in enumerate(result["item_id"], start=1):
            index = rank - 1
            out.append(
                {
                    "user_id": user_id,
                    "rank": rank,
                    "item_id": int(item),
                    "score": float(result["score"][index]),
                    **{head: float(result[head][index]) for head in F.HEADS},
                }
            )
    return out
