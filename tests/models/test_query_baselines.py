"""models.query_baselines: the TF-IDF intent classifier and the gazetteer of brands, products
and prices."""

from __future__ import annotations

import numpy as np

from models.query_baselines import Gazetteer, TfidfClassifier


def keyed_queries(seed: int, n: int = 90) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = (("buy", "order"), ("hotel", "flight"), ("course", "tutorial"))
    fillers = [
        "cheap",
        "new",
        "best",
        "red",
        "shoes",
        "laptop",
        "near",
        "me",
        "today",
        "online",
        "deal",
    ]
    texts, labels = [], []
    for i in range(n):
        k = i % 3
        words = [str(rng.choice(keys[k])), *rng.choice(fillers, size=3)]
        texts.append(" ".join(rng.permutation(words)))
        labels.append(k)
    return texts, np.array(labels)


def test_tfidf_learns_keyword_intents() -> None:
    texts, y = keyed_queries(0)
    model = TfidfClassifier(seed=0).fit(texts, y)
    test_texts, test_y = keyed_queries(1)
    assert (model.predict(test_texts) == test_y).mean() > 0.95
    proba = model.predict_proba(test_texts)
    assert proba.shape == (90, 3) and np.allclose(proba.sum(1), 1)
    assert list(model.classes_) == [0, 1, 2]
    # string labels come back as given; empty texts do not break it
    named = TfidfClassifier().fit(texts, np.array(["buy", "travel", "learn"])[y])
    assert named.predict(["book a hotel", ""]).tolist()[0] == "travel"


def test_tfidf_single_class() -> None:
    model = TfidfClassifier().fit(["a", "b"], [5, 5])
    assert model.predict(["c"]).tolist() == [5]


def test_gazetteer_finds_names_and_prices() -> None:
    gaz = Gazetteer(["Brightwave", "Brightwave Labs", "Acme"], ["running shoes", "laptop"])
    text = "Brightwave Labs running  shoes under $50"
    assert gaz.spans(text) == [(0, 15, "BRAND"), (16, 30, "PRODUCT"), (37, 40, "PRICE")]
    assert gaz.predict(["brightwave laptop 80 bucks", "acmeX laptops", "", "ACME"]) == [
        [(0, 10, "BRAND"), (11, 17, "PRODUCT"), (18, 26, "PRICE")],
        [],  # word boundaries: no "acme" inside "acmeX", no "laptop" inside "laptops"
        [],
        [(0, 4, "BRAND")],
    ]


def test_gazetteer_price_patterns() -> None:
    gaz = Gazetteer([], [])

    def prices(text: str) -> list[str]:
        return [text[s:e] for s, e, label in gaz.spans(text) if label == "PRICE"]

    assert prices("shoes below 120") == ["120"]
    assert prices("tv less than 1,200 dollars") == ["1,200 dollars"]
    assert prices("laptop max 900 or $1,500.50") == ["900", "$1,500.50"]
    assert prices("4k monitor 27 inch") == []  # numbers without a price cue are not prices
    assert prices("under 50kg") == []
