"""The KV block pool's bookkeeping: which block is free, who holds it, what tokens it caches.

The pool's memory (engine/paged_kv.py) is `num_blocks` blocks of `block_size` positions
each; this class only decides which block ids a sequence gets. As in vLLM v1:

  * every block has a reference count: a running sequence holds each block of its block
    table once, a pinned task session (the internal route) once more;
  * a full block is registered under the hash of its tokens chained with its parent's hash
    (`block_hashes`), so another sequence whose prompt starts with the same tokens takes the
    block instead of recomputing it (automatic prefix caching);
  * a block whose count drops to 0 goes to the tail of the free queue but KEEPS its hash:
    it can still be hit until an allocation evicts it, least recently freed first.

A sequence's blocks are freed tail first (the reverse of its table), so the blocks of a
long prompt's end are evicted before the shared system prompt at its start.
Not thread safe: the engine core calls it under its lock.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np


class NoFreeBlocks(RuntimeError):
    """The pool cannot supply the blocks asked for (the caller preempts or waits)."""


def block_hashes(tokens: list[int], block_size: int, start: int = 0, parent: int | None = None) -> list[int]:
    """The chained hashes of the full blocks of `tokens` from block `start` on; `parent` is
    the hash of block start-1 (None at the first block). Ints and tuples of ints hash the
    same in every process (no PYTHONHASHSEED salt), so the hashes are stable."""
    out = []
    for b in range(start, len(tokens) // block_size):
        parent = hash((parent, tuple(tokens[b * block_size:(b + 1) * block_size])))
        out.append(parent)
    return out


class BlockPool:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"a KV pool needs blocks: num_blocks={num_blocks}, block_size={block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.ref = np.zeros(num_blocks, np.int32)
        self.hash_of: list[int | None] = [None] * num_blocks
        self.cached: dict[int, int] = {}                                  # block hash -> block id
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # LRU first
        self.clean = np.ones(num_blocks, bool)   # free AND caching nothing: taking it evicts nothing
        self.evictions = 0       # cached blocks reused for other tokens
        self.hit_queries = 0     # prompt tokens looked up in the cache
        self.hit_tokens = 0      # ... and found there

    # ---- counts ---------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks an allocation can take (free ones, cached or not)."""
        return len(self.free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self.free)

    def usage(self) -> float:
        """Fraction of blocks held by a sequence or a pin (vLLM's kv_cache_usage_perc)."""
        return self.num_used / self.num_blocks

    # ---- prefix cache ---------------------------------------------------------------
    def lookup(self, hashes: list[int]) -> list[int]:
        """The blocks caching the longest run of `hashes` from the first (not yet taken)."""
        found = []
        for h in hashes:
            block = self.cached.get(h)
            if block is None:
                break
            found.append(block)
        return found

    def register(self, block: int, block_hash: int) -> None:
        """Block `block` (held, full) now caches the tokens that hash to `block_hash`."""
        if self.hash_of[block] is not None:
            return
        self.hash_of[block] = block_hash
        self.cached.setdefault(block_hash, block)  # an equal block cached already stays the one found

    def forget_free_hashes(self) -> None:
        """Drop the hash of every free block (prefix caching off: a freed block caches nothing)."""
        for block in self.free:
            self._unhash(block)
            self.clean[block] = True

    # ---- holding blocks -------------------------------------------------------------
    def touch(self, blocks: list[int]) -> None:
        """Take one more reference on each block (a prefix hit, a pin)."""
        for b in blocks:
            if self.ref[b] == 0:
                del self.free[b]
                self.clean[b] = False
            self.ref[b] += 1

    def allocate(self, n: int, after: int | None = None, want: int = 0) -> list[int]:
        """n fresh blocks, each held once, taken so that a sequence's blocks stay consecutive
        where they can (the numpy attention then reads views of the pool, no gather): the block
        right `after` the caller's last one when it is clean (free, caching nothing), else the
        start of a clean stretch of `want` blocks (the caller's expected growth), else the
        least recently freed block (evicting what it caches)."""
        if n > len(self.free):
            raise NoFreeBlocks(f"{n} KV blocks wanted, {len(self.free)} free")
        out = []
        nxt = None if after is None else after + 1
        for i in range(n):
            if nxt is None or nxt >= self.num_blocks or not self.clean[nxt]:
                nxt = self._clean_stretch(max(want - i, n - i))
            if nxt is not None:
                block = nxt
                del self.free[block]
            else:
                block, _ = self.free.popitem(last=False)  # least recently freed
            if self.hash_of[block] is not None:
                self._unhash(block)
                self.evictions += 1
            self.clean[block] = False
            self.ref[block] = 1
            out.append(block)
            nxt = block + 1
        return out

    def _clean_stretch(self, k: int) -> int | None:
        """Where a sequence that expects k more blocks should start: in the longest run of
        clean blocks, after up to k blocks of headroom for the block before the run (most
        likely another sequence's last, which grows too). None when no block is clean."""
        edges = np.diff(np.concatenate([[0], self.clean.view(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        if not starts.size:
            return None
        i = int(np.argmax(ends - starts))
        start, length = int(starts[i]), int(ends[i] - starts[i])
        return start if start == 0 else start + max(0, min(k, length - k))

    def release(self, blocks: list[int], keep_hashes: bool = True) -> None:
        """Drop one reference on each block, tail first; a block nobody holds becomes free
        (and, with keep_hashes, stays findable until evicted)."""
        for b in reversed(blocks):
            self.ref[b] -= 1
            if self.ref[b] < 0:
                raise AssertionError(f"KV block {b} released more often than held")
            if self.ref[b] == 0:
                if not keep_hashes:
                    self._unhash(b)
                self.free[b] = None
                self.clean[b] = self.hash_of[b] is None

    def _unhash(self, block: int) -> None:
        h = self.hash_of[block]
        if h is not None:
            self.hash_of[block] = None
            if self.cached.get(h) == block:
                del self.cached[h]
