"""Bidding math (stub: the bidding issue fills this in)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BiddingConfig:
    base_bid: float = 1.0
