"""The worker process collects garbage rarely (workers/worker.py GC_THRESHOLDS): the
default thresholds cost about 30% of its CPU (docs/PERFORMANCE.md)."""

from __future__ import annotations

import gc

from workers.worker import GC_THRESHOLDS, tune_garbage_collection


def test_tuning_freezes_the_start_up_heap_and_raises_the_thresholds():
    before = gc.get_threshold()
    try:
        tune_garbage_collection()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] >= 10_000
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
