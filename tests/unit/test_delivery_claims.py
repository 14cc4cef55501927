"""How much a delivery lane claims at once, and the lease that covers it."""

from __future__ import annotations

from workers.delivery_claims import MAX_CLAIM_ROWS, claim_plan


def test_unbatched_lane_claims_sixteen_requests_per_slot_under_the_documented_lease():
    assert claim_plan(1, 4, 10.0) == (64, (16 + 1 + 2) * 10.0)  # 190 s, docs/DESTINATIONS.md


def test_batched_lane_claims_whole_batches_up_to_the_cap_and_the_lease_covers_them():
    rows, lease_s = claim_plan(100, 4, 10.0)
    assert rows == MAX_CLAIM_ROWS and rows % 100 == 0
    requests_per_slot = rows // 100 // 4
    assert lease_s == (requests_per_slot + 1 + 2) * 10.0
    assert claim_plan(1000, 1, 10.0)[0] >= 1000  # one full batch at least, even for one slot
