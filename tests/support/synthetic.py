"""Tiny MovieLens-shaped data with learnable structure, made in the tests (never fetched).

Ratings follow gender x genre affinity plus item quality and user bias; which items a user
rates follows item quality (popularity), so click and purchase are learnable as well.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mtrec.data.movielens import GROUPLENS_GENRES

OCCUPATIONS = ("engineer", "student", "writer")
AGES = (22, 30, 41)


def make_movielens_dir(
    path: Path,
    n_users: int = 100,
    n_items: int = 120,
    ratings_per_user: int = 10,
    seed: int = 0,
    undated_items: tuple[int, ...] = (),
) -> Path:
    """Write u.data, u.user and u.item (GroupLens layout) under ``path``. The items in
    ``undated_items`` (1-based ids) have no release date, hence no year, as MovieLens-100K's
    item 267 has; everything else is the same as without them."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    users = pd.DataFrame(
        {
            "user_id": np.arange(1, n_users + 1),
            "age": rng.choice(AGES, n_users),
            "gender": rng.choice(["M", "F"], n_users),
            "occupation": rng.choice(OCCUPATIONS, n_users),
            "zip": [f"{rng.integers(10, 99)}{rng.integers(100, 999)}" for _ in range(n_users)],
        }
    )
    action = rng.random(n_items) < 0.5
    quality = rng.normal(0.0, 0.6, n_items)
    years = rng.integers(1960, 1998, n_items)
    with open(path / "u.user", "w") as out:
        for row in users.itertuples(index=False):
            out.write(f"{row.user_id}|{row.age}|{row.gender}|{row.occupation}|{row.zip}\n")
    with open(path / "u.item", "w", encoding="latin-1") as out:
        for item in range(n_items):
            flags = ["0"] * len(GROUPLENS_GENRES)
            flags[GROUPLENS_GENRES.index("Action" if action[item] else "Romance")] = "1"
            if rng.random() < 0.3:
                flags[GROUPLENS_GENRES.index("Comedy")] = "1"
            title = f"Movie {'Blast' if action[item] else 'Love'} {item + 1}"
            date = f"01-Jan-{years[item]}"
            if item + 1 in undated_items:
                date = ""
            else:
                title += f" ({years[item]})"
            out.write(f"{item + 1}|{title}|{date}||http://x|{'|'.join(flags)}\n")
    rows = []
    for user in users.itertuples(index=False):
        likes_action = user.gender == "M"
        affinity = np.where(action == likes_action, 1.0, -1.0)
        # Mild selection on taste, so rated items span both tastes and the gender x genre
        # signal is there to learn (as rating, beyond popularity) on any CPU.
        weights = np.exp(1.5 * quality + 0.4 * affinity)
        items = rng.choice(n_items, ratings_per_user, replace=False, p=weights / weights.sum())
        bias = rng.normal(0.0, 0.3)
        for item in items:
            score = 3.3 + 0.9 * affinity[item] + quality[item] + bias + rng.normal(0.0, 0.4)
            rows.append(
                (
                    user.user_id,
                    item + 1,
                    int(np.clip(np.rint(score), 1, 5)),
                    int(rng.integers(880_000_000, 890_000_000)),
                )
            )
    with open(path / "u.data", "w") as out:
        for row in rows:
            out.write("\t".join(str(v) for v in row) + "\n")
    return path


def make_interactions_csv(path: Path, n_rows: int = 200, seed: int = 0) -> Path:
    """A bring-your-own interactions CSV with real click/purchase columns."""
    rng = np.random.default_rng(seed)
    click = rng.integers(0, 2, n_rows)
    purchase = click * rng.integers(0, 2, n_rows)
    rating = np.where(click == 1, rng.integers(1, 6, n_rows).astype(float), np.nan)
    frame = pd.DataFrame(
        {
            "user_id": rng.integers(1, 30, n_rows),
            "item_id": rng.integers(1, 40, n_rows),
            "rating": rating,
            "click": click,
            "purchase": purchase,
            "timestamp": rng.integers(1_600_000_000, 1_700_000_000, n_rows),
            "gender": rng.choice(["M", "F"], n_rows),
            "genres": "Action|Comedy",
        }
    )
    frame.to_csv(path, index=False)
    return path
