"""Shape and consistency of the marketplace vocabulary (pure data)."""

from __future__ import annotations

import string
from collections import Counter

import pytest

from pipeline.sources.simulated import vocabulary as v

SAMPLE = {
    "brand": "Acme",
    "noun": "running shoes",
    "attr": "lightweight",
    "attr2": "cushioned",
    "benefit": "for marathon training",
    "price": v.format_price(89.5),
    "keyword": "jogging shoes",
}
AD_FIELDS = {"brand", "noun", "attr", "attr2", "benefit", "price"}


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _phrases(sub: v.Subtopic) -> tuple[str, ...]:
    return sub.nouns + sub.attributes + sub.benefits + sub.keywords


def test_counts() -> None:
    assert len(v.CATEGORIES) >= 14
    assert len(set(v.CATEGORIES)) == len(v.CATEGORIES)
    per_category = Counter(s.category for s in v.SUBTOPICS)
    assert set(per_category) == set(v.CATEGORIES)
    assert all(n == 5 for n in per_category.values()), per_category
    assert len(v.SUBTOPICS) == 5 * len(v.CATEGORIES)


@pytest.mark.parametrize("sub", v.SUBTOPICS, ids=lambda s: s.key)
def test_subtopic_sizes_and_text(sub: v.Subtopic) -> None:
    assert len(sub.nouns) >= 5
    assert len(sub.attributes) >= 6
    assert len(sub.benefits) >= 5
    assert len(sub.keywords) >= 8
    assert sub.key.startswith(sub.category + "/")
    for field in (sub.nouns, sub.attributes, sub.benefits, sub.keywords):
        assert len(set(field)) == len(field), f"duplicate phrase in {sub.key}"
    for phrase in _phrases(sub):
        assert phrase == phrase.strip() and phrase, f"empty or padded phrase in {sub.key}"
        assert phrase == phrase.lower(), f"not lowercase in {sub.key}: {phrase!r}"
        assert not set(phrase) & set("{};|"), f"template character in {sub.key}: {phrase!r}"
        assert "/" not in phrase and "_" not in phrase, f"key-like phrase in {sub.key}"
    low, high = sub.price_range
    assert 0 < low < high


def test_keys_unique() -> None:
    keys = [s.key for s in v.SUBTOPICS]
    assert len(set(keys)) == len(keys)


def test_no_noun_shared_between_subtopics() -> None:
    owner: dict[str, str] = {}
    for sub in v.SUBTOPICS:
        for noun in sub.nouns:
            assert noun not in owner, f"{noun!r} in both {owner[noun]} and {sub.key}"
            owner[noun] = sub.key


def test_every_category_has_brands() -> None:
    assert set(v.BRANDS) == set(v.CATEGORIES)
    all_brands = [b for brands in v.BRANDS.values() for b in brands]
    assert len(set(all_brands)) == len(all_brands), "a brand belongs to two categories"
    for category, brands in v.BRANDS.items():
        assert len(brands) >= 8, category
        assert all(b[0].isupper() for b in brands), category


@pytest.mark.parametrize(
    ("templates", "minimum"),
    [(v.TITLE_TEMPLATES, 8), (v.DESCRIPTION_TEMPLATES, 8)],
    ids=["title", "description"],
)
def test_ad_templates_format(templates: tuple[str, ...], minimum: int) -> None:
    assert len(templates) >= minimum
    assert len(set(templates)) == len(templates)
    for template in templates:
        assert _fields(template) <= AD_FIELDS, template
        assert {"brand", "noun"} <= _fields(template), template
        text = template.format(**SAMPLE)
        assert "{" not in text and "running shoes" in text and "Acme" in text


def test_templates_fill_with_every_subtopic() -> None:
    for sub in v.SUBTOPICS:
        brand = v.BRANDS[sub.category][0]
        slots = {
            "brand": brand,
            "noun": sub.nouns[-1],
            "attr": sub.attributes[0],
            "attr2": sub.attributes[-1],
            "benefit": sub.benefits[0],
            "price": v.format_price(sub.price_range[1]),
            "keyword": sub.keywords[0],
        }
        for template in v.TITLE_TEMPLATES + v.DESCRIPTION_TEMPLATES:
            assert sub.nouns[-1] in template.format(**slots)


def test_helpers() -> None:
    assert v.format_price(1234.4) == "$1,234"
    electronics = v.subtopics_of("electronics")
    assert len(electronics) == 5
    assert all(s.category == "electronics" for s in electronics)
    assert v.subtopics_of("no such category") == ()
