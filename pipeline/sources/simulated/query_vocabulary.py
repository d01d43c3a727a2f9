"""The words of the simulated search log (pure data, no randomness): query templates per intent,
each with the sentiment it carries, and the phrases that state a price cap.

Placeholders: `{noun}` or `{keyword}` (the product, exactly one of them per template), `{attr}`,
`{brand}` (a navigational query: only drawn when the query names a brand) and `{cap}` (a price
cap phrase such as "under $50": only drawn when the query states one). `queries` inserts a brand
before the product, and appends a cap, to templates that lack the slot. Several templates are
ambiguous on purpose: "{noun} deals" is a buy or a cheap query, "{noun} worth it" a reviews or
a compare query, "{brand} {noun} problems" a reviews or a support query.
"""

from __future__ import annotations

INTENTS: tuple[str, ...] = ("buy", "compare", "reviews", "cheap", "info", "support")
SENTIMENTS: tuple[str, ...] = ("negative", "neutral", "positive")
CAP_INTENTS: tuple[str, ...] = ("buy", "cheap", "compare")  # the intents that state price caps

# (template, sentiment) per shopping intent
INTENT_TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "buy": (
        ("buy {noun}", "neutral"),
        ("{keyword} online", "neutral"),
        ("{attr} {noun} for sale", "neutral"),
        ("order {keyword}", "neutral"),
        ("where to buy {noun}", "neutral"),
        ("{noun} shop", "neutral"),
        ("{noun} deals", "neutral"),
        ("{brand} {noun}", "neutral"),
        ("{brand} {keyword} official store", "neutral"),
        ("{keyword}", "neutral"),
        ("get {attr} {noun} delivered", "neutral"),
        ("{noun} in stock", "neutral"),
        ("{noun} free shipping", "neutral"),
        ("shop {brand} {noun} {cap}", "neutral"),
    ),
    "compare": (
        ("best {noun}", "neutral"),
        ("{keyword} comparison", "neutral"),
        ("top {attr} {noun}", "neutral"),
        ("which {keyword} is best", "neutral"),
        ("{noun} vs alternatives", "neutral"),
        ("compare {attr} {noun}", "neutral"),
        ("{noun} worth it", "neutral"),
        ("{brand} vs other {noun}", "neutral"),
        ("{brand} {noun} or competitors", "neutral"),
        ("best {noun} this year", "neutral"),
        ("highly rated {noun}", "positive"),
        ("top rated {keyword}", "positive"),
        ("{noun} buying guide", "neutral"),
        ("best value {noun} {cap}", "neutral"),
    ),
    "reviews": (
        ("{noun} reviews", "neutral"),
        ("{keyword} review", "neutral"),
        ("are {attr} {noun} worth it", "neutral"),
        ("{attr} {noun} ratings", "neutral"),
        ("{keyword} customer reviews", "neutral"),
        ("is {noun} any good", "neutral"),
        ("{brand} {noun} review", "neutral"),
        ("{noun} worth it", "neutral"),
        ("honest {noun} reviews", "neutral"),
        ("{noun} pros and cons", "neutral"),
        ("{noun} people love", "positive"),
        ("{brand} {noun} highly recommended", "positive"),
        ("{noun} complaints", "negative"),
        ("{brand} {noun} problems", "negative"),
    ),
    "cheap": (
        ("cheap {noun}", "neutral"),
        ("{keyword} discount", "neutral"),
        ("{noun} on sale", "neutral"),
        ("affordable {attr} {noun}", "neutral"),
        ("{keyword} coupon", "neutral"),
        ("budget {noun}", "neutral"),
        ("{noun} deals", "neutral"),
        ("{brand} {noun} promo code", "neutral"),
        ("{noun} clearance", "neutral"),
        ("discount {brand} {keyword}", "neutral"),
        ("lowest price {noun}", "neutral"),
        ("used {noun}", "neutral"),
        ("{noun} black friday", "neutral"),
        ("{cap} {noun}", "neutral"),
    ),
    "info": (
        ("how to choose {noun}", "neutral"),
        ("what is {keyword}", "neutral"),
        ("{noun} guide", "neutral"),
        ("{attr} {noun} explained", "neutral"),
        ("how does {keyword} work", "neutral"),
        ("{keyword} tips", "neutral"),
        ("how to clean {noun}", "neutral"),
        ("how long do {noun} last", "neutral"),
        ("{noun} size chart", "neutral"),
        ("what to look for in {noun}", "neutral"),
        ("{brand} {noun} manual", "neutral"),
        ("{noun} buying guide", "neutral"),
    ),
}

# after-sales queries: all negative
SUPPORT_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("{brand} {noun} stopped working", "negative"),
    ("{noun} broke after a week", "negative"),
    ("return {brand} {noun}", "negative"),
    ("{noun} refund", "negative"),
    ("{brand} warranty claim {noun}", "negative"),
    ("{noun} not working", "negative"),
    ("{brand} customer service {noun}", "negative"),
    ("{noun} defective", "negative"),
    ("how to return {noun}", "negative"),
    ("{brand} {noun} replacement part", "negative"),
    ("{noun} arrived damaged", "negative"),
    ("{brand} {noun} problems", "negative"),
    ("{keyword} keeps breaking", "negative"),
    ("cancel order {noun}", "negative"),
    ("{noun} missing parts", "negative"),
    ("{attr} {noun} fell apart", "negative"),
    ("{noun} warranty claim", "negative"),
    ("{keyword} stopped working after a month", "negative"),
)

QUERY_TEMPLATES_BY_INTENT: dict[str, tuple[tuple[str, str], ...]] = {
    **INTENT_TEMPLATES,
    "support": SUPPORT_TEMPLATES,
}

# (cap phrase, amount format): the PRICE span is the formatted amount only ("$50", "80 dollars",
# the "80" of "under 80 bucks"); the cap words stay outside it
CAP_PHRASES: tuple[tuple[str, str], ...] = (
    ("under {amount}", "${n}"),
    ("under {amount}", "{n} dollars"),
    ("under {amount} bucks", "{n}"),
    ("under {amount}", "{n}"),
    ("below {amount}", "{n} dollars"),
    ("below {amount}", "${n}"),
    ("less than {amount}", "${n}"),
    ("max {amount}", "${n}"),
    ("for under {amount}", "${n}"),
    ("up to {amount}", "{n} dollars"),
    ("no more than {amount}", "${n}"),
)

# nice mantissas a price cap is rounded to (times a power of ten)
CAP_MANTISSAS: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.5, 8.0, 10.0)
