"""User interest and user–ad text similarity, point-in-time correct (pure polars / numpy).

Everything here uses, for an impression at time `t`, only events strictly before `t`.

The interest vector of a user at `t` is the L2-normalised, time-decayed weighted mean of the
embeddings of the user's earlier events (search -> the query's embedding, view / click -> the
ad's fused embedding; the caller builds that frame). An event at `s < t` weighs
`weight * 2 ** (-(t - s) / half_life)`. Because the result is normalised, the common factor
`2 ** (-t / half_life)` cancels: the direction at `t` equals the direction of the decayed sum at
the user's last event before `t`. That sum follows the recurrence
`S_k = S_{k-1} * 2 ** (-(s_k - s_{k-1}) / half_life) + w_k * e_k`, whose factors are <= 1, so it
neither overflows nor loses precision, whatever the time span or the half-life. It is computed
for all users at once, one step per event rank (a loop over the longest history, not over rows):
events are laid out rank-major with users ordered by history length, so that step r is one
contiguous slice update of the users that have an r-th event.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features.lookup import positions

_DAY_US = 86_400 * 1_000_000


def to_matrix(column: pl.Series) -> np.ndarray:
    """An `Array(Float32, D)` column as an (n, D) float32 array (no copy when possible)."""
    if column.null_count():
        raise ValueError(f"column '{column.name}' has {column.null_count()} null embeddings")
    if not isinstance(column.dtype, pl.Array):
        raise ValueError(f"column '{column.name}' is {column.dtype}, expected Array(Float32, D)")
    out = column.to_numpy()
    return np.ascontiguousarray(out, dtype=np.float32).reshape(len(column), column.dtype.size)


def micros(ts: pl.Series) -> np.ndarray:
    return ts.cast(pl.Datetime("us")).dt.epoch("us").to_numpy().astype(np.int64)


def _norms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", x, x))


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero. float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = _norms(x)[:, None]
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, D) arrays; 0 where either row is zero."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"cosine: shapes differ {a.shape} vs {b.shape}")
    dot = np.einsum("ij,ij->i", a, b)
    den = _norms(a) * _norms(b)
    return np.divide(dot, den, out=np.zeros_like(dot), where=den > 0).astype(np.float32)


def by_user_time(user: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Stable order of rows by (user, ts)."""
    return np.lexsort((ts, user))


def last_prior(
    imp_user: np.ndarray, imp_ts: np.ndarray, ev_user: np.ndarray, ev_ts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each impression: the index of the user's last event strictly before it (events
    sorted by (user, ts)), -1 if none, and how many such events there are."""
    n_ev = len(ev_user)
    user = np.concatenate([ev_user, imp_user])
    ts = np.concatenate([ev_ts, imp_ts])
    # at equal (user, ts) impressions sort first: an event at exactly t is not "before t"
    tag = np.concatenate([np.ones(n_ev, np.int8), np.zeros(len(imp_user), np.int8)])
    order = np.lexsort((tag, ts, user))
    is_event = order < n_ev
    seen = np.cumsum(is_event) - 1  # index (in sorted events) of the last event so far
    last = np.full(len(imp_user), -1, dtype=np.int64)
    last[order[~is_event] - n_ev] = seen[~is_event]
    valid = last >= 0
    valid[valid] = ev_user[last[valid]] == imp_user[valid]
    last[~valid] = -1
    if n_ev == 0:
        return last, np.zeros(len(imp_user), dtype=np.int64)
    first = np.searchsorted(ev_user, ev_user[np.maximum(last, 0)], side="left")
    count = np.where(valid, last - first + 1, 0)
    return last, count


def event_decays(user: np.ndarray, ts: np.ndarray, half_life_days: float) -> np.ndarray:
    """Each sorted event's factor on its user's previous sum, `2 ** (-(s_k - s_{k-1}) /
    half_life)` (float32; a user's first event gets some factor that nothing multiplies).
    `user` and `ts` (microseconds) sorted by (user, ts)."""
    if half_life_days <= 0:
        raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
    gap_days = np.maximum(np.diff(ts, prepend=ts[:1]), 0) / _DAY_US
    return np.exp2(-gap_days / half_life_days).astype(np.float32)


def user_starts(user: np.ndarray) -> np.ndarray:
    """Whether each event (sorted by user) is its user's first."""
    return np.diff(user, prepend=user[0] - 1) != 0 if len(user) else np.zeros(0, bool)


def decayed_sums(
    first: np.ndarray, decay: np.ndarray, w: np.ndarray, table: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The decayed weighted sums S_k of events (not normalised), laid out rank-major.

    The events are sorted by (user, ts): `first` marks each user's first event, `decay` is
    `event_decays`, `w` the weights and `table[rows]` the embeddings. Returns (sums, where):
    `sums[where[k]]` is S_k of sorted event k; the extra last row of `sums` is zero. Linear in
    the embeddings: the sums of projected embeddings are the projections of the sums.
    """
    n, dim = len(first), table.shape[1]
    starts = np.flatnonzero(first)
    lengths = np.diff(np.append(starts, n))
    by_len = np.argsort(-lengths, kind="stable")  # longest histories first
    starts, lengths = starts[by_len], lengths[by_len]
    max_len = int(lengths[0]) if n else 0
    active = np.searchsorted(-lengths, -np.arange(max_len), side="left")  # users with > r events
    offset = np.concatenate([[0], np.cumsum(active)])
    where = np.empty(n, dtype=np.int64)
    for r in range(max_len):  # rank-major slot of each event
        where[starts[: active[r]] + r] = offset[r] + np.arange(active[r])
    slot_to_row = np.empty(n, dtype=np.int64)
    slot_to_row[where] = np.arange(n)
    decay = np.asarray(decay, dtype=np.float32)[slot_to_row]
    sums = np.empty((n + 1, dim), dtype=np.float32)
    np.take(table, rows[slot_to_row], axis=0, out=sums[:n])
    sums[n] = 0.0
    sums[:n] *= w.astype(np.float32)[slot_to_row, None]
    scratch = np.empty((active[1] if max_len > 1 else 0, dim), dtype=np.float32)
    for r in range(1, max_len):
        m = active[r]
        prev = sums[offset[r - 1] : offset[r - 1] + m]
        tmp = np.multiply(prev, decay[offset[r] : offset[r + 1], None], out=scratch[:m])
        sums[offset[r] : offset[r + 1]] += tmp
    return sums, where


def unit_rows(sums: np.ndarray) -> np.ndarray:
    """`sums` divided in place by their L2 norms (zero rows stay zero); returns the norms."""
    norm = _norms(sums)
    np.divide(sums, norm[:, None], out=sums, where=norm[:, None] > 0)
    return norm


def user_interest(
    impressions: pl.DataFrame, events: pl.DataFrame, half_life_days: float
) -> pl.DataFrame:
    """The user's interest vector at each impression, from events strictly before it: the
    definition, one vector per row. The features stage stores the same states once per event
    instead (`features.interest_store`); tests check the store against this.

    impressions: impression_id, user_id, ts. events: user_id, ts, weight (float), emb
    (Array(Float32, D), non-null; an all-zero row adds nothing). Returns impression_id,
    interest (Array(Float32, D), unit norm, zero without prior events) and interest_events
    (UInt32, the number of prior events), in the order of `impressions`.
    """
    table = to_matrix(events["emb"])
    rows = np.arange(events.height, dtype=np.int64)
    sums, index, count = interest_states(impressions, events, table, rows, half_life_days)
    return pl.DataFrame(
        {
            "impression_id": impressions["impression_id"],
            "interest": pl.Series("interest", np.take(sums, index, axis=0)),
            "interest_events": pl.Series(count, dtype=pl.UInt32),
        }
    )


def interest_states(
    impressions: pl.DataFrame,
    events: pl.DataFrame,
    table: np.ndarray,
    rows: np.ndarray,
    half_life_days: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`user_interest` without a vector per impression: (states, index, count). states (E + 1,
    D) float32 holds the unit-norm interest after each event (the last row zero); impression i's
    vector is `states[index[i]]`, from `count[i]` earlier events. Event k's embedding is
    `table[rows[k]]` (events: user_id, ts, weight), so no per-event copy is made either."""
    user = events["user_id"].to_numpy().astype(np.int64)
    ts = micros(events["ts"])
    order = by_user_time(user, ts)
    user, ts = user[order], ts[order]
    weight = events["weight"].cast(pl.Float64).fill_null(0.0).to_numpy()[order]
    decay = event_decays(user, ts, half_life_days)
    sums, where = decayed_sums(user_starts(user), decay, weight, table, rows[order])
    unit_rows(sums)
    last, count = last_prior(
        impressions["user_id"].to_numpy().astype(np.int64), micros(impressions["ts"]), user, ts
    )
    index = np.full(len(last), len(sums) - 1, dtype=np.int64)  # the zero row without history
    index[last >= 0] = where[last[last >= 0]]
    return sums, index, count


def recent_click_similarity(
    impressions: pl.DataFrame, clicks: pl.DataFrame, ad_emb: pl.DataFrame, k: int = 5
) -> pl.DataFrame:
    """Mean cosine of the impressed ad to the user's last `k` clicked ads strictly before t.

    impressions: impression_id, user_id, ts, ad_id. clicks: user_id, ts, ad_id. ad_emb: ad_id,
    emb (Array(Float32, D)); ads missing there count as zero vectors (similarity 0). Returns
    impression_id, recent_click_sim (Float32, 0 without prior clicks) and recent_clicks
    (UInt32, how many clicks were averaged, <= k), in the order of `impressions`.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    table = normalize(to_matrix(ad_emb["emb"]))
    table = np.vstack([table, np.zeros((1, table.shape[1]), np.float32)])  # last: unknown ad

    def rows(frame: pl.DataFrame) -> np.ndarray:
        found = positions(frame["ad_id"], ad_emb["ad_id"])
        return found.fill_null(ad_emb.height).to_numpy().astype(np.int64)

    cl_user = clicks["user_id"].to_numpy().astype(np.int64)
    cl_ts = micros(clicks["ts"])
    order = by_user_time(cl_user, cl_ts)
    last, count = last_prior(
        impressions["user_id"].to_numpy().astype(np.int64),
        micros(impressions["ts"]),
        cl_user[order],
        cl_ts[order],
    )
    ad_row, click_row = rows(impressions), rows(clicks)[order]
    used = np.minimum(count, k)
    gram = table @ table.T if len(table) <= 4096 else None  # small catalogue: all pairs once
    total = np.zeros(impressions.height, dtype=np.float64)
    for lag in range(k):
        ok = np.flatnonzero(used > lag)
        a, b = ad_row[ok], click_row[last[ok] - lag]
        total[ok] += gram[a, b] if gram is not None else row_dot(table, table, a, b)
    mean = np.divide(total, used, out=np.zeros_like(total), where=used > 0)
    return pl.DataFrame(
        {
            "impression_id": impressions["impression_id"],
            "recent_click_sim": pl.Series(mean, dtype=pl.Float32),
            "recent_clicks": pl.Series(used, dtype=pl.UInt32),
        }
    )


def row_dot(
    a: np.ndarray,
    b: np.ndarray,
    a_rows: np.ndarray | None = None,
    b_rows: np.ndarray | None = None,
    chunk: int = 65_536,
) -> np.ndarray:
    """a[a_rows[i]] . b[b_rows[i]] for each i, float32 (a row index left None: the array's own
    rows in order), in chunks of `chunk` rows (bounded temporary memory)."""
    n = len(a) if a_rows is None else len(a_rows)
    out = np.empty(n, dtype=np.float32)
    for s in range(0, n, chunk):
        left = a[s : s + chunk] if a_rows is None else a[a_rows[s : s + chunk]]
        right = b[s : s + chunk] if b_rows is None else b[b_rows[s : s + chunk]]
        out[s : s + chunk] = np.einsum("ij,ij->i", left, right)
    return out


def fit_pca(x: np.ndarray, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fit a PCA on (train) rows: returns (mean (D,), components (dim, D)), float32."""
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float32)
    if not 1 <= dim <= min(x.shape):
        raise ValueError(f"PCA dim must be in [1, {min(x.shape)}] for {x.shape} rows, got {dim}")
    pca = PCA(n_components=dim, random_state=seed).fit(x)
    return pca.mean_.astype(np.float32), pca.components_.astype(np.float32)


def apply_pca(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Project rows on fitted components: (x - mean) @ components.T, float32 (n, dim)."""
    return ((np.asarray(x, dtype=np.float32) - mean) @ components.T).astype(np.float32)
