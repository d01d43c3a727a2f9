"""The baselines the query tagger must beat (pure: texts in, labels and spans out).

`TfidfClassifier`: word 1-2-gram and character 2-4-gram (within word boundaries) TF-IDF,
sublinear term frequencies, into a class-balanced logistic regression (C = 4): the classic
strong-but-simple text classifier, robust to typos and unseen inflections through the
character grams. `Gazetteer`: case-insensitive dictionary lookup of brand and product names on
word boundaries (leftmost, then longest match) plus a regular expression for price amounts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from models.spans import CURRENCY, NUMBER, QUALIFIERS, UNITS, Span

# "$50", "€ 20", "$1,200.50"; "50 dollars", "80 bucks", "2k usd"; a bare number after a
# qualifier ("under 50", "less than 100"): the span is the amount (currency and unit included)
_END = r"(?!\w|[.,]\d)"  # not inside a longer word or number
_PRICES = (
    re.compile(rf"(?<!\w){CURRENCY}\s?(?:{NUMBER})k?(?:\s?(?:{UNITS}))?{_END}", re.I),
    re.compile(rf"(?<![\w.,$€£])(?:{NUMBER})k?\s?(?:{UNITS}){_END}", re.I),
    re.compile(rf"(?<!\w)(?:{QUALIFIERS})\s+(?P<amount>(?:{NUMBER})k?){_END}", re.I),
)


class TfidfClassifier:
    """TF-IDF (word 1-2 grams + char_wb 2-4 grams) and a logistic regression; labels of any
    hashable kind, returned as given. A single train class predicts that class."""

    def __init__(self, seed: int = 0, c: float = 4.0) -> None:
        self.seed, self.c = seed, c
        self.model = None
        self.classes_: np.ndarray = np.zeros(0)

    def fit(self, texts: Sequence[str], labels: Sequence | np.ndarray) -> TfidfClassifier:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import FeatureUnion, make_pipeline

        y = np.asarray(labels)
        if len(y) != len(texts) or not len(y):
            raise ValueError(f"{len(texts)} texts but {len(y)} labels (need one each, >= 1)")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            self.model = None
            return self
        features = FeatureUnion([
            ("word", TfidfVectorizer(ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b",
                                     sublinear_tf=True)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)),
        ])  # fmt: skip
        classifier = LogisticRegression(
            C=self.c, max_iter=1000, class_weight="balanced", random_state=self.seed
        )
        self.model = make_pipeline(features, classifier).fit(_clean(texts), y)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, n classes) probabilities, columns in `classes_` order."""
        if not len(self.classes_):
            raise ValueError("TfidfClassifier: fit before predict")
        if self.model is None:
            return np.ones((len(texts), 1))
        return self.model.predict_proba(_clean(texts))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self.classes_[self.predict_proba(texts).argmax(axis=1)]


def _clean(texts: Sequence[str]) -> list[str]:
    return [t if isinstance(t, str) else "" for t in texts]


class Gazetteer:
    """BRAND / PRODUCT spans by dictionary lookup (case-insensitive, on word boundaries, the
    longest name at the leftmost position; a name in both lists is a brand; whitespace inside a
    name matches any whitespace) and PRICE spans by pattern, never overlapping a name."""

    def __init__(self, brands: Iterable[str], products: Iterable[str]) -> None:
        self.label: dict[str, str] = {}
        for label, names in (("BRAND", brands), ("PRODUCT", products)):
            for name in names:
                key = _key(name)
                if key:
                    self.label.setdefault(key, label)
        ordered = sorted(self.label, key=lambda k: (-len(k), k))
        alternatives = "|".join(r"\s+".join(map(re.escape, k.split(" "))) for k in ordered)
        self.pattern = (
            re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE) if ordered else None
        )

    def spans(self, text: str) -> list[Span]:
        """The spans of one text, sorted by start."""
        if not isinstance(text, str) or not text.strip():
            return []
        found: list[Span] = []
        if self.pattern is not None:
            found = [(m.start(), m.end(), self.label[_key(m.group())])
                     for m in self.pattern.finditer(text)]  # fmt: skip
        for pattern in _PRICES:
            for m in pattern.finditer(text):
                group = "amount" if "amount" in pattern.groupindex else 0
                start, end = m.span(group)
                if not any(start < e and end > s for s, e, _ in found):
                    found.append((start, end, "PRICE"))
        return sorted(found)

    def predict(self, texts: Sequence[str]) -> list[list[Span]]:
        return [self.spans(t) for t in texts]


def _key(name: str) -> str:
    return " ".join(str(name).lower().split())
