"""Block tables, prefix-cache hits and pinned task sessions over one BlockPool.

A sequence's KV lives in the blocks of its block table: position p is in block
`blocks[p // block_size]`, at offset `p % block_size`. This manager grows tables as tokens
are scheduled, registers each block that fills up in the prefix cache, and frees a table
when its sequence ends or is preempted.

Pins replace the old longest-common-prefix session store: when a step of an internal-route
task ends, its full blocks stay held under the task id, so the task's next step finds them
by hash and prefills only what is new, even with prefix caching off. A pin is dropped when
its task ends (`unpin`), when nobody touched it for `pin_ttl_s`, when pins hold more than
`max_pinned_blocks`, and, least recently used first, before a running sequence is preempted
for want of blocks. With prefix caching on, an unpinned task's blocks stay in the cache.

A hybrid model (Qwen3.5) also keeps a fixed-size linear-attention state per sequence, in a
pool of state slots (`num_state_slots`; the model holds the memory, this class only says
which slot is whose). A sequence takes a slot at admission and gives it back when freed;
its state then describes exactly its computed tokens, so nothing of it is found by hash
(prefix caching stays off) and a preempted sequence recomputes from token 0. A pin of such
a sequence holds its slot and every block of its computed tokens (the last one partial),
and the task's next step takes them over only when its prompt continues every one of
those tokens; otherwise the pin is dropped and the step starts afresh.
Not thread safe: the engine core calls it under its lock.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from inloop.services.runtime.engine.block_pool import BlockPool, NoFreeBlocks, block_hashes


@dataclass(eq=False)
class PagedSeq:
    """One sequence's view of the pool: the tokens it has asked the model to read (in order)
    and how many of them have keys and values in its blocks."""

    session_id: str = ""
    tokens: list[int] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)
    num_computed: int = 0
    num_hashed: int = 0            # leading full blocks registered in the prefix cache
    last_hash: int | None = None   # the hash of block num_hashed-1 (the chain's parent)
    expected_len: int = 0          # the tokens it will most likely reach (prompt + budget)
    state: int = -1                # its slot in the per-sequence state pool (hybrid models)

    @property
    def length(self) -> int:
        return self.num_computed


@dataclass
class Pin:
    blocks: list[int]
    touched: float = field(default_factory=time.monotonic)
    state: int = -1                # a hybrid sequence's state slot ...
    tokens: list[int] = field(default_factory=list)   # ... and the tokens it describes


class StateSlots:
    """Which per-sequence state slots are free (lowest first)."""

    def __init__(self, num_slots: int):
        self.num_slots = num_slots
        self.free = list(range(num_slots - 1, -1, -1))

    def take(self) -> int | None:
        return self.free.pop() if self.free else None

    def give(self, slot: int) -> None:
        if slot in self.free:
            raise AssertionError(f"state slot {slot} given back twice")
        self.free.append(slot)
        self.free.sort(reverse=True)


class KVCacheManager:
    def __init__(self, pool: BlockPool, enable_prefix_caching: bool = True,
                 max_pinned_blocks: int | None = None, pin_ttl_s: float = 600.0, num_state_slots: int = 0):
        self.pool = pool
        self.block_size = pool.block_size
        self.states = StateSlots(num_state_slots) if num_state_slots else None
        self._prefix_caching = enable_prefix_caching and self.states is None
        self.max_pinned_blocks = pool.num_blocks // 2 if max_pinned_blocks is None else max_pinned_blocks
        self.pin_ttl_s = pin_ttl_s
        self.pins: OrderedDict[str, Pin] = OrderedDict()   # least recently used first
        self.pin_evictions = 0
        self.pins_expired = 0

    @property
    def enable_prefix_caching(self) -> bool:
        return self._prefix_caching

    @enable_prefix_caching.setter
    def enable_prefix_caching(self, on: bool) -> None:
        self._prefix_caching = on and self.states is None   # a state is never shared by hash
        if not on:
            self.pool.forget_free_hashes()

    # ---- a sequence's blocks -----------------------------------------------------------
    def admit(self, seq: PagedSeq, max_hit: int) -> int:
        """Start `seq`'s table from the longest cached run of its tokens (at most `max_hit`
        tokens, whole blocks). Returns the tokens hit. Looked up when prefix caching is on,
        or when the sequence's task has a pin (its own previous step's blocks)."""
        self.expire()
        assert not seq.blocks, "admit a sequence once, before it holds blocks"
        if self.states is not None:
            return self._admit_with_state(seq, max_hit)
        if not (self._prefix_caching or seq.session_id in self.pins):
            return 0
        bs = self.block_size
        hashes = block_hashes(seq.tokens[:max(max_hit, 0) // bs * bs], bs)
        found = self.pool.lookup(hashes)
        self.pool.touch(found)
        seq.blocks = list(found)
        seq.num_computed = seq.num_hashed = len(found)
        seq.num_computed *= bs
        seq.last_hash = hashes[len(found) - 1] if found else None
        self.pool.hit_queries += len(seq.tokens)
        self.pool.hit_tokens += seq.num_computed
        if seq.session_id in self.pins:
            self.pins.move_to_end(seq.session_id)
            self.pins[seq.session_id].touched = time.monotonic()
        return seq.num_computed

    def _admit_with_state(self, seq: PagedSeq, max_hit: int) -> int:
        """A hybrid sequence: its task's pinned state and blocks when its tokens continue every
        token the state describes (with at least one token left to run), else a fresh slot."""
        pin = self.pins.pop(seq.session_id, None) if seq.session_id else None
        self.pool.hit_queries += len(seq.tokens)
        n = len(pin.tokens) if pin is not None else 0
        if pin is not None and 0 < n <= max_hit and seq.tokens[:n] == pin.tokens:
            seq.blocks, seq.state, seq.num_computed = pin.blocks, pin.state, n
            self.pool.hit_tokens += n
            return n
        if pin is not None:
            self._release_pin(pin)
        while not self.states.free and self.pins:
            self._drop_pin(next(iter(self.pins)))
            self.pin_evictions += 1
        seq.state = self.states.take()
        if seq.state is None:
            raise AssertionError("more sequences admitted than there are state slots")
        return 0

    def grow(self, seq: PagedSeq, n: int) -> bool:
        """Make room for n more tokens of `seq` (dropping least recently used pins if the pool
        is short); False, with nothing allocated, when the blocks are not there."""
        need = -(-(seq.num_computed + n) // self.block_size) - len(seq.blocks)
        if need <= 0:
            return True
        while need > self.pool.num_free and self.pins:
            self._drop_pin(next(iter(self.pins)))
            self.pin_evictions += 1
        try:
            want = -(-seq.expected_len // self.block_size) - len(seq.blocks)
            seq.blocks += self.pool.allocate(need, after=seq.blocks[-1] if seq.blocks else None, want=want)
        except NoFreeBlocks:
            return False
        return True

    def commit(self, seq: PagedSeq, n: int) -> None:
        """n more tokens of `seq` have keys and values now: register the blocks that filled."""
        seq.num_computed += n
        if self.states is not None:   # nothing of a hybrid sequence is found by hash
            return
        full = seq.num_computed // self.block_size
        if full > seq.num_hashed:
            for i, h in enumerate(block_hashes(seq.tokens[:full * self.block_size], self.block_size,
                                               seq.num_hashed, seq.last_hash), start=seq.num_hashed):
                self.pool.register(seq.blocks[i], h)
                seq.last_hash = h
            seq.num_hashed = full

    def free(self, seq: PagedSeq) -> None:
        """Release `seq`'s blocks (finished or preempted); it then computes nothing."""
        self.pool.release(seq.blocks, keep_hashes=self._prefix_caching)
        seq.blocks = []
        seq.num_computed = seq.num_hashed = 0
        seq.last_hash = None
        if seq.state >= 0:
            self.states.give(seq.state)
            seq.state = -1

    # ---- pinned task sessions -----------------------------------------------------------
    def pin(self, session_id: str, seq: PagedSeq) -> None:
        """Hold `seq`'s full blocks under `session_id` (replacing that task's previous pin).
        A hybrid sequence hands its state slot and the blocks of all its computed tokens over
        to the pin (free() then releases only the rest)."""
        if self.states is not None:
            self._pin_state(session_id, seq)
            return
        blocks = seq.blocks[:seq.num_hashed]
        self.pool.touch(blocks)          # before the old pin lets go: shared blocks never hit 0
        old = self.pins.pop(session_id, None)
        if old is not None:
            self.pool.release(old.blocks, keep_hashes=self._prefix_caching)
        self.pins[session_id] = Pin(blocks)
        self.expire()
        while self.pinned_blocks() > self.max_pinned_blocks and len(self.pins) > 1:
            self._drop_pin(next(iter(self.pins)))
            self.pin_evictions += 1

    def _pin_state(self, session_id: str, seq: PagedSeq) -> None:
        old = self.pins.pop(session_id, None)
        if old is not None:
            self._release_pin(old)
        if seq.state < 0 or seq.num_computed == 0:
            return
        held = -(-seq.num_computed // self.block_size)
        self.pins[session_id] = Pin(seq.blocks[:held], state=seq.state, tokens=seq.tokens[:seq.num_computed])
        seq.blocks, seq.state = seq.blocks[held:], -1
        self.expire()
        while self.pinned_blocks() > self.max_pinned_blocks and len(self.pins) > 1:
            self._drop_pin(next(iter(self.pins)))
            self.pin_evictions += 1

    def unpin(self, session_id: str) -> bool:
        """Let a task's blocks go (the task ended); with prefix caching on they stay cached."""
        if session_id not in self.pins:
            return False
        self._drop_pin(session_id)
        return True

    def pinned_blocks(self) -> int:
        return sum(len(p.blocks) for p in self.pins.values())

    def expire(self) -> None:
        """Drop pins idle longer than pin_ttl_s (a client that went away holds no memory)."""
        cutoff = time.monotonic() - self.pin_ttl_s
        while self.pins:
            sid, p = next(iter(self.pins.items()))
            if p.touched > cutoff:
                break
            self._drop_pin(sid)
            self.pins_expired += 1

    def pinned_states(self) -> int:
        return sum(p.state >= 0 for p in self.pins.values())

    def _drop_pin(self, session_id: str) -> None:
        self._release_pin(self.pins.pop(session_id))

    def _release_pin(self, pin: Pin) -> None:
        self.pool.release(pin.blocks, keep_hashes=self._prefix_caching)
        if pin.state >= 0:
            self.states.give(pin.state)
