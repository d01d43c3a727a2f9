"""features.interest_store: the interest vectors rebuilt from the stored events and the projected
text vectors equal the per-row projection of the full-width states."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from features.interest import (
    apply_pca,
    by_user_time,
    decayed_sums,
    event_decays,
    fit_pca,
    interest_states,
    last_prior,
    micros,
    unit_rows,
    user_starts,
)
from features.interest_store import events_frame, interest_blocks, interest_table, vectors_frame

T0 = datetime(2026, 3, 1)
HALF_LIFE = 2.0


def log(seed: int, n_ev: int = 3000, n_imp: int = 1500, dim: int = 8):
    rng = np.random.default_rng(seed)
    events = pl.DataFrame(
        {
            "user_id": pl.Series(rng.integers(0, 120, n_ev), dtype=pl.Int64),
            # whole hours, so that events tie with each other and with impressions
            "ts": [T0 + timedelta(hours=int(h)) for h in rng.integers(0, 480, n_ev)],
            "weight": pl.Series(rng.uniform(0.5, 2.0, n_ev), dtype=pl.Float64),
            "row": pl.Series(rng.integers(0, 50, n_ev), dtype=pl.Int64),
        }
    )
    imps = pl.DataFrame(
        {
            "impression_id": pl.Series(range(n_imp), dtype=pl.Int64),
            "user_id": pl.Series(rng.integers(0, 130, n_imp), dtype=pl.Int64),
            "ts": [T0 + timedelta(hours=int(h)) for h in rng.integers(0, 500, n_imp)],
        }
    )
    table = rng.normal(size=(50, dim)).astype(np.float32)
    table[7] = 0.0  # a text without an embedding: a user whose only events carry it has |S| = 0
    return imps, events, table


def store(imps, events, table, mean, comps) -> tuple[np.ndarray, pl.DataFrame, pl.DataFrame]:
    """The codes and the two tables, built as the features stage builds them."""
    user = events["user_id"].to_numpy()
    order = by_user_time(user, micros(events["ts"]))
    user, ts = user[order], micros(events["ts"])[order]
    weight = events["weight"].to_numpy()[order]
    rows = events["row"].to_numpy()[order]
    first, decay = user_starts(user), event_decays(user, ts, HALF_LIFE)
    sums, where = decayed_sums(first, decay, weight, table, rows)
    norm = unit_rows(sums)[where]
    last, _ = last_prior(imps["user_id"].to_numpy(), micros(imps["ts"]), user, ts)
    used = np.unique(rows)
    return (
        last + 1,
        events_frame(first, decay, weight, rows, norm),
        vectors_frame(used, table[used], mean, comps),
    )


def per_row(imps, events, table, mean, comps) -> np.ndarray:
    """The column as the features stage built it before the store: each row's state,
    projected; zero without history."""
    states, index, count = interest_states(imps, events, table, events["row"].to_numpy(), 2.0)
    out = apply_pca(states[index], mean, comps)
    out[count == 0] = 0.0
    return out


@pytest.mark.parametrize("max_events", [1, 400, 10**9])
def test_codes_into_the_table_give_the_per_row_column(max_events: int) -> None:
    imps, events, table = log(5)
    events = events.sample(fraction=1.0, shuffle=True, seed=1)
    mean, comps = fit_pca(np.random.default_rng(0).normal(size=(200, 8)), 4)
    codes, ev, vectors = store(imps, events, table, mean, comps)
    states = interest_table(ev, vectors, max_events)
    assert states.shape == (events.height + 1, 4)
    assert (codes == 0).any() and (codes > 0).any()
    np.testing.assert_array_equal(states[0], 0.0)
    np.testing.assert_allclose(states[codes], per_row(imps, events, table, mean, comps), atol=2e-6)


def test_blocks_of_users_give_the_table_of_one_pass() -> None:
    imps, events, table = log(6)
    mean, comps = fit_pca(table, 4)
    _, ev, vectors = store(imps, events, table, mean, comps)
    whole = interest_table(ev, vectors, 10**9)
    for size in (1, 37, 1000):
        np.testing.assert_array_equal(interest_table(ev, vectors, size), whole)


def test_a_state_of_zero_norm_is_the_train_mean() -> None:
    imps, events, table = log(7, n_ev=200)
    events = events.with_columns(
        pl.when(pl.col("user_id") == events["user_id"][0]).then(7).otherwise("row").alias("row")
    )
    mean, comps = fit_pca(table, 4)
    codes, ev, vectors = store(imps, events, table, mean, comps)
    states = interest_table(ev, vectors, 10**9)
    zero = np.flatnonzero(ev["norm"].to_numpy() == 0)
    assert len(zero) > 0
    np.testing.assert_allclose(states[zero + 1], -np.tile(mean @ comps.T, (len(zero), 1)))
    np.testing.assert_allclose(states[codes], per_row(imps, events, table, mean, comps), atol=2e-6)


def test_no_events_and_bad_tables() -> None:
    imps, events, table = log(8)
    mean, comps = fit_pca(table, 4)
    _, ev, vectors = store(imps, events.head(0), table, mean, comps)
    assert interest_table(ev, vectors, 100).shape == (1, 4)
    _, ev, vectors = store(imps, events, table, mean, comps)
    with pytest.raises(ValueError, match="offset"):
        interest_table(ev, vectors.filter(pl.col("row") >= 0), 100)
    with pytest.raises(ValueError, match="lack"):
        interest_table(ev.drop("norm"), vectors, 100)
    with pytest.raises(ValueError, match="rows outside"):
        interest_table(ev, vectors.filter(pl.col("row") != ev["row"].max()), 100)


def test_blocks_hold_whole_users_and_every_event_once() -> None:
    user = np.sort(np.random.default_rng(4).integers(0, 300, 5000))
    first = user_starts(user)
    assert interest_blocks(first, 5000) == [(0, 5000)]
    blocks = interest_blocks(first, 700)
    assert len(blocks) >= 7
    assert blocks[0][0] == 0 and blocks[-1][1] == 5000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))
    assert all(first[start] for start, _ in blocks)  # each starts at a user's first event
    assert max(stop - start for start, stop in blocks) <= 700 + np.bincount(user).max()
    assert interest_blocks(first[:0], 10) == []
    with pytest.raises(ValueError, match="max_events"):
        interest_blocks(first, 0)
