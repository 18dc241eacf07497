"""The history feature on constructed cases: only clicks strictly before the row's time,
most recent first, never the row's own item, capped; explicit eval rows see all of train."""

from mtrec import names as F
from mtrec.data import build
from mtrec.data import source as S


def row(stamp: int, item: int, rating: float | None = None, click: int = 1, role: str = S.TRAIN):
    return {
        F.TIMESTAMP: stamp,
        F.ITEM_ID: item,
        F.RATING: rating,
        F.CLICK: click,
        build.ROLE: role,
    }


def histories(rows: list[dict], explicit: bool = False) -> list[str]:
    build.add_history(rows, explicit=explicit)
    return [r[F.HISTORY] for r in rows]


def test_only_earlier_clicks_most_recent_first_without_the_row_s_item():
    rows = [
        row(10, 1, 5.0),
        row(20, 2, 3.0),
        row(20, 3),  # A click without a rating.
        row(30, 4, click=0),  # Not a click: in no history.
        row(40, 5, 4.0),
        row(40, 9, click=0),  # A sampled non-interaction for the t=40 positive.
        row(50, 1, 2.5),  # Item 1 again: its own earlier click is left out.
    ]
    assert histories(rows) == [
        "",
        "1:5",  # Item 3 has the same time: not before.
        "1:5",
        "3 2:3 1:5",
        "3 2:3 1:5",
        "3 2:3 1:5",
        "5:4 3 2:3",
    ]


def test_nothing_at_or_after_the_row_s_time_and_the_cap():
    rows = [row(stamp, 100 + stamp, 4.0) for stamp in range(80)]
    built = histories(rows)
    for stamp, history in enumerate(built):
        items = [int(token.split(":")[0]) for token in history.split()]
        assert items == [100 + s for s in range(stamp - 1, -1, -1)][: F.HISTORY_LENGTH]
        assert all(item - 100 < stamp for item in items)
    assert len(built[-1].split()) == F.HISTORY_LENGTH == 50


def test_explicit_eval_rows_see_every_train_row_and_are_in_no_history():
    rows = [
        row(100, 1, 4.0),
        row(200, 2, 5.0),
        row(50, 3, 3.0, role=S.EVAL),  # Earlier than every train row, still sees them all.
        row(300, 4, 1.0, role=S.EVAL),
        row(300, 8, click=0, role=S.EVAL),
    ]
    assert histories(rows, explicit=True) == ["", "1:4", "2:5 1:4", "2:5 1:4", "2:5 1:4"]
    # The same rows split by time: the eval rows are ordinary clicks.
    assert histories(rows)[1] == "1:4 3:3"


def test_the_cap_reaches_past_the_row_s_own_item():
    # Item 7 clicked at every odd time among 100 other items; a last click of item 7 at
    # t=200 sees 50 earlier clicks of other items, reaching back past its own.
    rows = [row(stamp, 7 if stamp % 2 else 1000 + stamp, 3.0) for stamp in range(120)]
    rows.append(row(200, 7, 5.0))
    rows.append(row(200, 8, click=0))  # Its negative: the newest 50 clicks, item 7 included.
    built = histories(rows)
    own = [int(token.split(":")[0]) for token in built[-2].split()]
    assert own == [1000 + s for s in range(118, -1, -2)][: F.HISTORY_LENGTH]
    negative = [int(token.split(":")[0]) for token in built[-1].split()]
    assert negative == [7 if s % 2 else 1000 + s for s in range(119, -1, -1)][:50]
    # Row t=101 (item 7): the other items before it, newest first.
    assert built[101].split()[:3] == ["1100:3", "1098:3", "1096:3"]


def test_a_random_valid_split_is_held_out_as_the_eval_file_is():
    train_rows = [row(stamp, stamp, 4.0) for stamp in range(1, 21)]
    negative = row(15, 99, click=0)  # Drawn for the t=15 positive: takes its split.
    evals = [row(5, 50, 3.0, role=S.EVAL)]
    rows = [*train_rows, negative, *evals]
    build._PerUser._split_ratings(rows, 0.2, True, seed=42, user=7)
    negative[build.SPLIT] = train_rows[14][build.SPLIT]
    held = [r[F.ITEM_ID] for r in train_rows if r[build.SPLIT] == F.VALID]
    assert len(held) == 4 and held != list(range(17, 21))  # Drawn, not the latest four.
    again = [dict(r) for r in rows]
    build._PerUser._split_ratings(again, 0.2, True, seed=42, user=7)
    assert [r[build.SPLIT] for r in again] == [r[build.SPLIT] for r in rows]
    build._PerUser._split_ratings(again, 0.2, True, seed=42, user=8)
    assert [r[build.SPLIT] for r in again] != [r[build.SPLIT] for r in rows]
    build.add_history(rows, explicit=True, held_valid=True)

    def items(history: str) -> list[int]:
        return [int(token.split(":")[0]) for token in history.split()]

    kept = [r[F.ITEM_ID] for r in train_rows if r[build.SPLIT] == F.TRAIN]
    for r in train_rows:
        if r[build.SPLIT] == F.VALID:  # Every train row, newest first, as an eval row would.
            assert items(r[F.HISTORY]) == kept[::-1]
        else:  # Earlier train rows only: no held-out item, nothing later.
            assert items(r[F.HISTORY]) == [i for i in kept[::-1] if i < r[F.ITEM_ID]]
    # The eval row sees the whole train file, the held-out rows included.
    assert items(evals[0][F.HISTORY]) == list(range(20, 0, -1))
    assert negative[F.HISTORY] == train_rows[14][F.HISTORY]  # Its positive's history.
