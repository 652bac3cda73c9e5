"""Which catalog segments to merge while the catalog runs, so that a table keeps few segments.

Every group commit writes one small Parquet segment per table it touches: thousands a day. Start-up compacts a
table with many segments into one, but a catalog that runs for months must not wait for a restart (its
listing and start-up would grow with every flush). Merging is size-tiered: segments whose sizes lie within
a factor of `MERGE_FAN_IN` form a tier, and a tier of `MERGE_FAN_IN` segments or more is merged into one, which
lands in a higher tier. A table then keeps under `MERGE_FAN_IN` segments per tier (a handful of tiers from
kilobytes to gigabytes), and a row is rewritten once per tier, not once per merge.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from qure_ray.storage.object_store import ObjectInfo

MERGE_FAN_IN = 16


def size_tier(size: int, fan_in: int = MERGE_FAN_IN) -> int:
    """floor(log_fan_in(size)): 0 for sizes under fan_in bytes, 1 under fan_in², ..."""
    tier = 0
    while size >= fan_in:
        size //= fan_in
        tier += 1
    return tier


def merge_groups(segments: Iterable[ObjectInfo], fan_in: int = MERGE_FAN_IN) -> list[list[str]]:
    """Groups of segment keys to merge, each into one segment (keys in name order, which is write order)."""
    tiers: dict[int, list[str]] = defaultdict(list)
    for info in segments:
        tiers[size_tier(info.size, fan_in)].append(info.key)
    return [sorted(keys) for _, keys in sorted(tiers.items()) if len(keys) >= fan_in]
