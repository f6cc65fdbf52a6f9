"""The KV block pool and the cache manager: refcounts, prefix hits by hash, LRU eviction, pins."""
from __future__ import annotations

import time

import pytest

from inloop.services.runtime.engine.block_pool import BlockPool, NoFreeBlocks, block_hashes
from inloop.services.runtime.engine.kv_cache_manager import KVCacheManager, PagedSeq

BS = 4


def _seq(tokens, session=""):
    return PagedSeq(session_id=session, tokens=list(tokens))


def _run(manager, seq, max_hit=None):
    """Admit seq, give it blocks for all its tokens and commit them (what a step does)."""
    manager.admit(seq, len(seq.tokens) - 1 if max_hit is None else max_hit)
    n = len(seq.tokens) - seq.num_computed
    assert manager.grow(seq, n)
    manager.commit(seq, n)


def test_hashes_chain_so_a_block_is_found_only_after_the_same_prefix():
    a = block_hashes(list(range(12)), BS)
    b = block_hashes([99] + list(range(1, 12)), BS)
    assert len(a) == 3 and a[0] != b[0] and a[1] != b[1]            # same tokens, other parent
    assert block_hashes(list(range(12)), BS, start=1, parent=a[0]) == a[1:]


def test_allocate_release_counts_and_refuses_beyond_the_pool():
    pool = BlockPool(4, BS)
    got = pool.allocate(3)
    assert pool.num_used == 3 and all(pool.ref[b] == 1 for b in got)
    with pytest.raises(NoFreeBlocks):
        pool.allocate(2)
    pool.touch(got[:1])
    pool.release(got)
    assert pool.num_used == 1 and pool.ref[got[0]] == 1
    pool.release(got[:1])
    assert pool.num_used == 0
    with pytest.raises(AssertionError):
        pool.release(got[:1])


def test_allocation_keeps_a_sequence_consecutive_when_the_next_block_is_free():
    pool = BlockPool(8, BS)
    a = pool.allocate(2)
    b = pool.allocate(1)            # takes block 2
    pool.release(b)
    assert pool.allocate(1, after=a[-1]) == [a[-1] + 1]


def test_prefix_hit_shares_blocks_and_a_full_hit_still_leaves_a_token_to_run():
    manager = KVCacheManager(BlockPool(16, BS))
    first = _seq(range(10))
    _run(manager, first)
    assert first.num_hashed == 2                  # 2 full blocks of 4, the third partly filled
    second = _seq(list(range(10)) + [50, 51])
    hit = manager.admit(second, len(second.tokens) - 1)
    assert hit == 8 and second.blocks == first.blocks[:2]
    assert all(manager.pool.ref[b] == 2 for b in second.blocks)
    exact = _seq(range(8))
    assert manager.admit(exact, 7) == 4           # 8 tokens cached, but the last one must run
    for s in (first, second, exact):
        manager.free(s)
    assert manager.pool.num_used == 0 and manager.pool.hit_tokens == 12


def test_freed_blocks_stay_cached_until_evicted_least_recently_freed_first():
    pool = BlockPool(4, BS)
    manager = KVCacheManager(pool)
    old, new = _seq(range(8)), _seq(range(100, 108))
    _run(manager, old, 0)
    manager.free(old)
    _run(manager, new, 0)
    manager.free(new)
    assert len(pool.cached) == 4 and pool.num_free == 4
    grab = pool.allocate(2)                        # evicts old's blocks first (freed earlier)
    assert pool.evictions == 2 and set(grab) == {0, 1}
    assert manager.admit(_seq(range(100, 109)), 8) == 8   # new's blocks are still there
    assert manager.admit(_seq(range(9)), 8) == 0


def test_prefix_caching_off_forgets_freed_blocks_but_pins_still_hit():
    manager = KVCacheManager(BlockPool(16, BS), enable_prefix_caching=False)
    s = _seq(range(9))
    _run(manager, s)
    manager.free(s)
    assert manager.admit(_seq(range(9)), 8) == 0 and not manager.pool.cached
    task = _seq(range(9), session="t")
    _run(manager, task)
    manager.pin("t", task)
    manager.free(task)
    step2 = _seq(list(range(9)) + [7, 7], session="t")
    assert manager.admit(step2, 10) == 8           # the task's own blocks, pinned
    manager.free(step2)
    assert manager.unpin("t") and not manager.unpin("t")
    assert manager.pool.num_used == 0 and not manager.pool.cached


def test_pins_give_way_before_a_running_sequence_runs_out_and_expire():
    manager = KVCacheManager(BlockPool(4, BS), pin_ttl_s=0.05)
    task = _seq(range(8), session="t")
    _run(manager, task)
    manager.pin("t", task)
    manager.free(task)
    assert manager.pool.num_used == 2
    big = _seq(range(200, 216))
    assert manager.grow(big, 16)                   # needs all 4 blocks: the pin is dropped
    assert manager.pin_evictions == 1 and not manager.pins
    manager.free(big)
    again = _seq(range(8), session="u")
    _run(manager, again)
    manager.pin("u", again)
    manager.free(again)
    time.sleep(0.06)
    manager.expire()
    assert manager.pins_expired == 1 and manager.pool.num_used == 0
