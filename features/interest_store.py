"""The user interest vectors stored once per event instead of once per impression (pure numpy /
polars).

An impression's interest vector is the direction of its user's decayed sum S after the user's
last event strictly before it (`features.interest`), projected on the train PCA:
`(S / |S|) @ C.T - mean @ C.T`. Many impressions share a state, but most states are distinct
(on `default` 82% of the rows), so a table of states would be no smaller than the per-row
column. What is small is what the states are made of. The sums are linear in the embeddings,
so `S @ C.T` is the same recurrence over the projected embeddings (dim wide, not full width);
only `|S|` needs the full width, and that is one number per event. So the features folder
holds:

- per impression a code (`e_user_interest`, Int32): 1 + the position, among the events sorted
  by (user, ts), of its user's last event strictly before it; 0 without one (the zero vector,
  which is the train mean);
- `interest_events.parquet`, the sorted events: `first` (the user's first event), `decay`
  (the factor on the user's previous sum), `weight`, `row` (into the projected text vectors)
  and `norm` (|S| after the event, computed at full width by the features stage);
- `interest_vectors.parquet`: `row` and `vec`, the text vectors of the events' ads and
  queries projected on the PCA components (`C e`), and at row -1 the offset `mean @ C.T`.

`interest_table` rebuilds from them the (E + 1, dim) table of the projected states (row 0 the
zero vector); impression i's vector is `table[code[i]]`. It equals the per-row projection of
the normalised full-width state within float rounding (the order of the operations differs).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features.interest import decayed_sums

EVENT_COLUMNS = ("first", "decay", "weight", "row", "norm")
# events per block of whole users whose states are held at once (the features stage's at full
# width, about 1.5 GB at 384-d; the readers' at the PCA's width); fewer events are one block
INTEREST_BLOCK_EVENTS = 1_000_000
OFFSET_ROW = -1  # interest_vectors' row holding `mean @ components.T`


def events_frame(
    first: np.ndarray, decay: np.ndarray, weight: np.ndarray, row: np.ndarray, norm: np.ndarray
) -> pl.DataFrame:
    """The sorted events as `interest_events.parquet` holds them."""
    return pl.DataFrame(
        {
            "first": pl.Series(first, dtype=pl.Boolean),
            "decay": pl.Series(decay, dtype=pl.Float32),
            "weight": pl.Series(weight, dtype=pl.Float32),
            "row": pl.Series(row, dtype=pl.Int32),
            "norm": pl.Series(norm, dtype=pl.Float32),
        }
    )


def vectors_frame(
    rows: np.ndarray, text: np.ndarray, mean: np.ndarray, components: np.ndarray
) -> pl.DataFrame:
    """`interest_vectors.parquet`: the text vectors `text` (of the events' `rows`) projected on
    the components, and the offset `mean @ components.T` at row -1."""
    projected = np.vstack([text @ components.T, (mean @ components.T)[None, :]])
    rows = np.append(rows, OFFSET_ROW)
    return pl.DataFrame(
        {
            "row": pl.Series(rows, dtype=pl.Int32),
            "vec": pl.Series(projected.astype(np.float32)),
        }
    )


def interest_table(events: pl.DataFrame, vectors: pl.DataFrame, max_events: int) -> np.ndarray:
    """The projected interest after each sorted event: (E + 1, dim) float32, row 0 zero (no
    history), row k + 1 the state after event k. Whole users of about `max_events` events at
    a time (a user's states never depend on another user's events)."""
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"interest events lack {missing}")
    row = vectors["row"].to_numpy()
    vec = vectors["vec"].to_numpy().astype(np.float32, copy=False)
    if (row == OFFSET_ROW).sum() != 1:
        raise ValueError("interest vectors: no single offset row")
    offset = vec[row == OFFSET_ROW][0]
    text = np.zeros((int(row.max(initial=-1)) + 1, vec.shape[1]), np.float32)
    text[row[row >= 0]] = vec[row >= 0]
    n = events.height
    first = events["first"].to_numpy()
    decay = events["decay"].to_numpy()
    weight = events["weight"].to_numpy()
    rows = events["row"].to_numpy().astype(np.int64)
    norm = events["norm"].to_numpy()
    if n and (not first[0] or rows.min() < 0 or rows.max() >= len(text)):
        raise ValueError("interest events: not sorted by user, or rows outside the vectors")
    out = np.zeros((n + 1, text.shape[1]), np.float32)
    for start, stop in interest_blocks(first, max_events):
        part = slice(start, stop)
        sums, where = decayed_sums(first[part], decay[part], weight[part], text, rows[part])
        states = out[1 + start : 1 + stop]
        np.take(sums, where, axis=0, out=states)
        del sums, where
        scale = norm[part, None]
        np.divide(states, scale, out=states, where=scale > 0)
        states[scale[:, 0] <= 0] = 0.0  # a zero sum (text-less events): the zero direction
        states -= offset
    return out


def interest_blocks(first: np.ndarray, max_events: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of whole users of about `max_events` events each."""
    if max_events < 1:
        raise ValueError(f"max_events must be >= 1, got {max_events}")
    n = len(first)
    if n == 0:
        return []
    starts = np.flatnonzero(first)
    # a block starts at the first user starting past another multiple of max_events
    cuts = starts[np.flatnonzero(np.diff(starts // max_events, prepend=-1))].tolist()
    return list(zip(cuts, [*cuts[1:], n], strict=True))
