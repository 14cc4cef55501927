"""core/profiles.py trait merging: newest state time per key, within the profile caps. Pure."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from core.profiles import MAX_TRAIT_KEYS, MAX_TRAITS_BYTES, merge_trait_sets, merge_traits

T0 = datetime(2026, 5, 5, 12, tzinfo=UTC)


def size(traits: dict) -> int:
    return len(json.dumps(traits, separators=(",", ":"), ensure_ascii=False).encode())


def test_newest_state_time_wins_and_nothing_is_refused_below_the_caps():
    traits, times = {}, {}
    assert merge_traits(traits, times, {"plan": "pro"}, T0) == []
    assert merge_traits(traits, times, {"plan": "free"}, T0 - timedelta(seconds=1)) == []
    assert traits == {"plan": "pro"}


def test_key_cap_refuses_new_keys_only():
    traits, times = {}, {}
    refused = merge_traits(traits, times, {f"k{i}": i for i in range(MAX_TRAIT_KEYS + 3)}, T0)
    assert refused == [f"k{i}" for i in range(MAX_TRAIT_KEYS, MAX_TRAIT_KEYS + 3)]
    assert len(traits) == MAX_TRAIT_KEYS and set(times) == set(traits)
    assert merge_traits(traits, times, {"k0": "new", "other": 1}, T0 + timedelta(1)) == ["other"]
    assert traits["k0"] == "new"


def test_byte_cap_is_exact_json_size_and_tracks_replacements():
    traits, times = {}, {}
    for i in range(200):
        merge_traits(traits, times, {f"key{i}": "é" * 500}, T0)  # multi-byte text counts in bytes
        assert size(traits) <= MAX_TRAITS_BYTES
    assert 50 < len(traits) < 200
    # Shrinking a value frees room for another key.
    before = len(traits)
    merge_traits(traits, times, {"key0": ""}, T0 + timedelta(1))
    assert merge_traits(traits, times, {"fresh": "x" * 100}, T0 + timedelta(1)) == []
    assert len(traits) == before + 1 and size(traits) <= MAX_TRAITS_BYTES


def test_profile_already_over_the_cap_can_still_shrink():
    traits = {f"k{i}": "x" * 200 for i in range(400)}
    times = dict.fromkeys(traits, T0.isoformat())
    assert size(traits) > MAX_TRAITS_BYTES
    assert merge_traits(traits, times, {"k1": "small"}, T0 + timedelta(1)) == []
    assert merge_traits(traits, times, {"k2": "x" * 300}, T0 + timedelta(1)) == ["k2"]


def test_merging_two_profiles_stays_within_the_caps():
    a = {f"a{i}": i for i in range(400)}
    b = {f"b{i}": i for i in range(400)}
    ta = dict.fromkeys(a, T0.isoformat())
    tb = dict.fromkeys(b, T0.isoformat())
    refused = merge_trait_sets(a, ta, b, tb)
    assert len(a) == MAX_TRAIT_KEYS and len(refused) == 300
    assert all(f"a{i}" in a for i in range(400))  # the survivor's own keys stay
