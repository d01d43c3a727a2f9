"""features.interest: point-in-time user interest, similarities and PCA."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from features.interest import (
    apply_pca,
    cosine,
    fit_pca,
    normalize,
    recent_click_similarity,
    row_dot,
    to_matrix,
    user_interest,
)

T0 = datetime(2026, 3, 1)


def day(x: float) -> datetime:
    return T0 + timedelta(days=x)


def emb(rows, dim: int | None = None) -> pl.Series:
    arr = np.asarray(rows, dtype=np.float32).reshape(len(rows), dim or len(rows[0]))
    return pl.Series("emb", arr)


def frame_events(users, days, weights, vectors) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": pl.Series(users, dtype=pl.Int64),
            "ts": [day(d) for d in days],
            "weight": pl.Series(weights, dtype=pl.Float64),
            "emb": emb(vectors),
        }
    )


def frame_impressions(users, days) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "impression_id": pl.Series(range(100, 100 + len(users)), dtype=pl.Int64),
            "user_id": pl.Series(users, dtype=pl.Int64),
            "ts": [day(d) for d in days],
        }
    )


def test_exact_values_on_a_five_row_example():
    events = frame_events([1, 1, 2], [0, 1, 0], [1.0, 1.0, 2.0], [[1, 0], [0, 1], [0.6, 0.8]])
    imps = frame_impressions([1, 1, 1, 2, 3], [0, 1, 2, 5, 5])
    got = user_interest(imps, events, half_life_days=1.0)
    # user 1 at day 2: 1 * 2**-2 * [1, 0] + 1 * 2**-1 * [0, 1] = [0.25, 0.5] -> normalised
    s = np.sqrt(0.25**2 + 0.5**2)
    expected = pl.DataFrame(
        {
            "impression_id": pl.Series([100, 101, 102, 103, 104], dtype=pl.Int64),
            "interest": emb([[0, 0], [1, 0], [0.25 / s, 0.5 / s], [0.6, 0.8], [0, 0]]).alias(
                "interest"
            ),
            "interest_events": pl.Series([0, 1, 2, 1, 0], dtype=pl.UInt32),
        }
    )
    assert got.select("impression_id", "interest_events").equals(
        expected.select("impression_id", "interest_events")
    )
    np.testing.assert_allclose(
        to_matrix(got["interest"]), to_matrix(expected["interest"]), atol=1e-6
    )


def brute_force(imps: pl.DataFrame, events: pl.DataFrame, half_life: float) -> np.ndarray:
    vec = to_matrix(events["emb"]).astype(np.float64)
    out = np.zeros((imps.height, vec.shape[1]))
    for i, (u, t) in enumerate(zip(imps["user_id"], imps["ts"], strict=True)):
        for j, (eu, et, w) in enumerate(
            zip(events["user_id"], events["ts"], events["weight"], strict=True)
        ):
            if eu == u and et < t:
                out[i] += w * 2 ** (-(t - et).total_seconds() / 86400 / half_life) * vec[j]
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norm, out=np.zeros_like(out), where=norm > 0)


@pytest.fixture
def random_log():
    rng = np.random.default_rng(3)
    n_ev, n_imp, dim = 120, 80, 6
    # whole hours, so that ties between events and impressions happen
    events = frame_events(
        rng.integers(0, 6, n_ev),
        rng.integers(0, 240, n_ev) / 24,
        rng.uniform(0.5, 2, n_ev),
        rng.normal(size=(n_ev, dim)),
    )
    imps = frame_impressions(rng.integers(0, 7, n_imp), rng.integers(0, 240, n_imp) / 24)
    return imps, events


def test_matches_brute_force_with_ties_and_unsorted_input(random_log):
    imps, events = random_log
    got = user_interest(imps, events.sample(fraction=1.0, shuffle=True, seed=1), 2.0)
    np.testing.assert_allclose(
        to_matrix(got["interest"]), brute_force(imps, events, 2.0), atol=1e-5
    )
    assert got["impression_id"].equals(imps["impression_id"])


def test_a_planted_future_event_leaves_interest_unchanged(random_log):
    imps, events = random_log
    before = user_interest(imps, events, 2.0)
    t_plant = day(5)
    planted = frame_events([1], [5], [100.0], [np.full(6, 9.0)])
    after = user_interest(imps, pl.concat([events, planted]), 2.0)
    not_after = ((imps["user_id"] != 1) | (imps["ts"] <= t_plant)).to_numpy()
    assert not_after.sum() > 0 and (~not_after).sum() > 0
    np.testing.assert_array_equal(
        to_matrix(after["interest"])[not_after], to_matrix(before["interest"])[not_after]
    )
    # and it does change the impressions of that user after it
    assert not np.allclose(
        to_matrix(after["interest"])[~not_after], to_matrix(before["interest"])[~not_after]
    )


def test_zero_vector_without_history():
    events = frame_events([1], [3], [1.0], [[0.0, 1.0, 0.0]])
    imps = frame_impressions([1, 2], [3, 9])  # same instant as the event; another user
    got = user_interest(imps, events, 1.0)
    np.testing.assert_array_equal(to_matrix(got["interest"]), 0.0)
    assert got["interest_events"].to_list() == [0, 0]


def test_no_overflow_over_a_long_span_with_a_short_half_life():
    days = np.arange(0, 365, 0.5)
    vectors = np.tile([[1.0, 0.0], [0.0, 1.0]], (len(days) // 2, 1))
    events = frame_events(np.zeros(len(days)), days, np.ones(len(days)), vectors)
    got = user_interest(frame_impressions([0], [364.9]), events, half_life_days=1e-3)
    np.testing.assert_allclose(to_matrix(got["interest"]), [[0.0, 1.0]], atol=1e-6)


def test_cosine_rowwise_zero_for_zero_rows():
    a = np.array([[1, 0], [1, 1], [0, 0], [3, 4]], dtype=np.float32)
    b = np.array([[0, 2], [2, 2], [1, 1], [-3, -4]], dtype=np.float32)
    np.testing.assert_allclose(cosine(a, b), [0, 1, 0, -1], atol=1e-6)
    with pytest.raises(ValueError, match="shapes"):
        cosine(a, b[:2])


def test_recent_click_similarity_last_k_before_t():
    ads = pl.DataFrame(
        {
            "ad_id": pl.Series([1, 2, 3, 4], dtype=pl.Int64),
            "emb": emb([[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6]]),
        }
    )
    clicks = pl.DataFrame(
        {"user_id": [7, 7, 7], "ts": [day(0), day(1), day(2)], "ad_id": [1, 2, 3]}
    )
    imps = pl.DataFrame(
        {
            "impression_id": [1, 2, 3, 4, 5],
            "user_id": [7, 7, 7, 8, 7],
            "ts": [day(3), day(2), day(0), day(3), day(3)],
            "ad_id": [4, 4, 4, 4, 99],  # 99: no embedding
        }
    )
    got = recent_click_similarity(imps, clicks, ads, k=2)
    # imp 1: last two clicks before day 3 are ads 3 and 2: (0.96 + 0.6) / 2
    # imp 2: clicks before day 2 (the day-2 click is not before): ads 2 and 1: (0.6 + 0.8) / 2
    np.testing.assert_allclose(got["recent_click_sim"].to_numpy(), [0.78, 0.7, 0, 0, 0], atol=1e-6)
    assert got["recent_clicks"].to_list() == [2, 2, 0, 0, 2]
    assert got["impression_id"].to_list() == [1, 2, 3, 4, 5]


def test_pca_fitted_on_train_rows_only():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 8)).astype(np.float32) * np.arange(1, 9, dtype=np.float32)
    test = rng.normal(size=(50, 8)).astype(np.float32) + 5.0
    mean, comps = fit_pca(train, 3, seed=0)
    assert mean.shape == (8,) and comps.shape == (3, 8) and comps.dtype == np.float32
    np.testing.assert_allclose(comps @ comps.T, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(apply_pca(train, mean, comps).mean(0), 0.0, atol=1e-4)
    # test rows are projected with train's mean: their shift shows up
    assert np.abs(apply_pca(test, mean, comps).mean(0)).max() > 1.0
    _, comps2 = fit_pca(train, 3, seed=0)
    np.testing.assert_array_equal(comps, comps2)
    with pytest.raises(ValueError, match="PCA dim"):
        fit_pca(train, 9)


def test_no_events_at_all():
    events = frame_events([1], [0], [1.0], [[1.0, 0.0]]).clear()
    got = user_interest(frame_impressions([1, 2], [1, 2]), events, 1.0)
    np.testing.assert_array_equal(to_matrix(got["interest"]), 0.0)
    assert got["interest"].dtype == pl.Array(pl.Float32, 2)
    assert got["interest_events"].to_list() == [0, 0]


def test_large_catalogue_path_equals_the_gram_path():
    rng = np.random.default_rng(5)
    table = normalize(rng.normal(size=(50, 8)))
    a, b = rng.integers(0, 50, 1000), rng.integers(0, 50, 1000)
    np.testing.assert_allclose(
        row_dot(table, table, a, b, chunk=64), (table @ table.T)[a, b], atol=1e-6
    )


def test_row_dot_with_and_without_row_indices():
    rng = np.random.default_rng(6)
    left = rng.normal(size=(130, 4)).astype(np.float32)
    table = rng.normal(size=(9, 4)).astype(np.float32)
    idx = rng.integers(0, 9, 130)
    want = np.array([left[i] @ table[idx[i]] for i in range(130)])
    got = row_dot(left, table, b_rows=idx, chunk=50)  # chunks of 50, 50 and 30 rows
    assert got.dtype == np.float32 and got.shape == (130,)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(row_dot(table, left, a_rows=idx), want, rtol=1e-5)
    assert row_dot(left[:0], table, b_rows=idx[:0]).shape == (0,)
