"""Mention replacement: more labelled queries from a catalog of names (pure python / numpy).

A labelled query "nike running shoes under $50" with a BRAND and a PRODUCT span becomes
"acme trail runners under $50" with the spans moved to the new names: the same intent,
sentiment and context, another brand and product. This is the standard augmentation for
entity taggers trained on few annotations (Dai & Adel 2020, "An analysis of simple data
augmentation for named entity recognition"): the annotations teach the contexts in which a
name appears, the catalog (the ads' brands and keywords, the gazetteer's own lists) teaches
the names, so names that no annotated query contains are still found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from models.spans import Annotated, Span


def replace_mentions(
    data: Annotated, names: Mapping[str, Sequence[str]], copies: int, seed: int
) -> Annotated:
    """`data` followed by up to `copies` variants of each query with a span of a label in
    `names`: every such span's text replaced by a name of its label drawn at random (lower-cased
    where the original mention is all lower case), the other spans moved with the text.
    Variants equal to a text already present are dropped. Deterministic for a seed."""
    pools = {k: sorted({str(n).strip() for n in v if str(n).strip()}) for k, v in names.items()}
    pools = {k: v for k, v in pools.items() if v}
    if copies < 1 or not pools:
        return data
    rng = np.random.default_rng(seed)
    seen = set(data.texts)
    texts, intent, sentiment, spans = list(data.texts), [], [], list(data.spans)
    for i, (text, found) in enumerate(zip(data.texts, data.spans, strict=True)):
        if not any(label in pools for _, _, label in found):
            continue
        for _ in range(copies):
            new_text, new_spans = _variant(text, found, pools, rng)
            if new_text in seen:
                continue
            seen.add(new_text)
            texts.append(new_text)
            spans.append(new_spans)
            intent.append(data.intent[i])
            sentiment.append(data.sentiment[i])
    return Annotated(
        texts,
        np.concatenate([data.intent, np.asarray(intent, dtype=np.int64)]),
        np.concatenate([data.sentiment, np.asarray(sentiment, dtype=np.int64)]),
        spans,
    )


def _variant(
    text: str, spans: Sequence[Span], pools: Mapping[str, list[str]], rng: np.random.Generator
) -> tuple[str, list[Span]]:
    """One variant of `text`: spans in order (an overlapping one is kept as it is)."""
    out, moved, at, shift = [], [], 0, 0
    for start, end, label in sorted(spans):
        if start < at:  # overlaps the previous span: left unchanged, shifted
            moved.append((start + shift, end + shift, label))
            continue
        out.append(text[at:start])
        piece = text[start:end]
        if label in pools:
            pool = pools[label]
            piece_new = pool[int(rng.integers(len(pool)))]
            piece = piece_new.lower() if piece == piece.lower() else piece_new
        new_start = start + shift
        moved.append((new_start, new_start + len(piece), label))
        shift += len(piece) - (end - start)
        out.append(piece)
        at = end
    out.append(text[at:])
    return "".join(out), moved
