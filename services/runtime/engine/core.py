"""The batching engine core: every step, schedule -> execute -> update (vLLM v1's shape).

Each request's decode logic (engine.py, generation.py, constrained.py: sampling, stop
strings, grammar masks, forced text, statistics) runs on the request's own thread and
reaches the model only through `feed(seq, ids)`: "append these tokens to my sequence and
give me the logits". The feed blocks; the core's loop thread gathers the feeds of every
sequence and runs them as ONE forward pass per step:

  schedule  running sequences first, in admission order, then waiting ones (FCFS) while
            fewer than max_num_seqs run; each gets min(its unfed tokens, what is left of
            the max_num_batched_tokens budget), so a long prompt is prefilled in chunks
            beside the others' decode tokens. A sequence's blocks are allocated here; when
            the pool is short, the latest admitted running sequence is preempted (its blocks
            freed, its tokens recomputed when it is admitted again: its thread just waits
            longer). A new sequence first takes what the prefix cache holds of its tokens.
            A hybrid model's sequence (Qwen3.5) also takes a linear-attention state slot at
            admission and gives it back whenever its blocks are freed (kv_cache_manager.py).
  execute   one model.forward_paged over all scheduled rows (Transformer's, or Qwen35Model's
            with each sequence's state slot in its SeqSlots), or the backend's own stepper
            (CUDA: fused launches, graphs for decode-only steps), logits only of the rows
            some feed needs.
  update    commit the computed tokens (full blocks enter the prefix cache) and hand each
            finished feed its logits, waking its thread.

The loop waits for running threads to post their next feed before it steps (briefly: a
slow thread does not hold back the others), so decode rows join the same step.
Without a loop thread (`feed` called with no loop running: tests, warm-up, a caller of
Engine.generate) the feed runs its steps inline on the caller's thread, a batch of one.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from inloop.services.contract.backend import PagedKV, SeqSlots
from inloop.services.runtime.engine.kv_cache_manager import KVCacheManager, PagedSeq

GATHER_WAIT_S = 0.02  # how long a step waits for busy request threads to post their feeds
SHORT_FEED = 16       # a feed this short (a decode token, forced text) is scheduled before prefill chunks


class KVCacheTooSmall(RuntimeError):
    """One sequence alone needs more KV blocks than the pool has (raise --kv-cache-memory)."""


@dataclass
class Feed:
    start: int                      # index in seq.tokens of the feed's first token
    all_logits: bool
    rows: list[np.ndarray] = field(default_factory=list)
    done: bool = False
    error: BaseException | None = None
    parked: bool = False            # its thread waits in feed() for the loop to run it
    sampling: object = None         # a DeviceSampling: sample the last row in the step (sample())
    sample: tuple | None = None     # ... its (token, logprob, entropy, margin)


@dataclass(eq=False)   # identity: two sequences with the same tokens are still two
class Sequence(PagedSeq):
    feed: Feed | None = None
    preempted: bool = False


def _slots(block_list: list[int], bs: int, rows: int, context: int, state: int = -1) -> SeqSlots:
    """Where a sequence's `context` positions live: every slot, and the runs of consecutive ones."""
    blocks = np.asarray(block_list[:-(-context // bs)], np.int64)
    slots = (blocks[:, None] * bs + np.arange(bs)).reshape(-1)[:context]
    cuts = np.flatnonzero(np.diff(blocks) != 1) + 1
    starts, ends = np.concatenate([[0], cuts]), np.concatenate([cuts, [len(blocks)]])
    runs = tuple((int(blocks[a]) * bs, int(min(e * bs, context) - a * bs)) for a, e in zip(starts, ends))
    return SeqSlots(rows, context, slots, runs, state)


class EngineCore:
    def __init__(self, model, kv: PagedKV, manager: KVCacheManager, max_num_seqs: int,
                 max_num_batched_tokens: int, stepper=None):
        self.model = model
        self.kv = kv
        self.manager = manager
        self.stepper = stepper   # the backend's own way to run a step (Backend.paged_stepper), or None
        self.pool = manager.pool
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.cond = threading.Condition()
        self.running: list[Sequence] = []                        # hold blocks; admission order
        self.waiting: collections.deque[Sequence] = collections.deque()  # a feed, no blocks yet
        self.open_seqs = 0        # sequences between open and close
        self.busy = 0             # ... whose thread is not blocked in feed
        self.loop_thread: threading.Thread | None = None
        self.steps = 0
        self.preemptions = 0
        self.tokens_computed = 0  # tokens run through the model (prefix-cache hits are not)

    # ---- request threads ---------------------------------------------------------------
    def open(self, session_id: str = "", expected_len: int = 0) -> Sequence:
        """A new sequence (its thread counts as busy until it feeds); expected_len: the tokens
        it will most likely reach, so its blocks are placed where they can grow consecutively."""
        with self.cond:
            self.open_seqs += 1
            self.busy += 1
        return Sequence(session_id=session_id, expected_len=expected_len)

    def close(self, seq: Sequence, pin: bool = False) -> None:
        """The sequence ended: its blocks are freed (pinned under its session first if asked)."""
        with self.cond:
            if seq in self.running:
                self.running.remove(seq)
            if seq in self.waiting:
                self.waiting.remove(seq)
            if pin and seq.session_id:
                self.manager.pin(seq.session_id, seq)
            self.manager.free(seq)
            self.open_seqs -= 1
            self.busy -= 1
            self.cond.notify_all()

    @property
    def samples_on_device(self) -> bool:
        """Whether sample() draws in the step itself (a backend stepper that samples: CUDA)."""
        return bool(getattr(self.stepper, "samples", False))

    def sample(self, seq: Sequence, ids: list[int], sampling) -> tuple[int, float, float, float]:
        """Append ids to seq, run them and sample the next token in the same step, with the
        request's settings, seed and token index (a DeviceSampling): (token, logprob, entropy,
        margin). Only where samples_on_device."""
        feed = self._run_feed(seq, ids, Feed(len(seq.tokens), False, sampling=sampling))
        return feed.sample

    def feed(self, seq: Sequence, ids: list[int], all_logits: bool = False) -> np.ndarray:
        """Append ids to seq and run them; logits [len(ids) or 1, V] of the fed tokens."""
        feed = self._run_feed(seq, ids, Feed(len(seq.tokens), all_logits))
        return np.concatenate(feed.rows) if feed.all_logits else feed.rows[-1]

    def _run_feed(self, seq: Sequence, ids: list[int], feed: Feed) -> Feed:
        with self.cond:
            seq.tokens.extend(ids)
            seq.feed = feed
            if seq not in self.running and seq not in self.waiting:
                (self.waiting.appendleft if seq.preempted else self.waiting.append)(seq)
            if self.loop_thread is None or self.loop_thread is threading.current_thread():
                while not feed.done:   # inline: this thread runs the steps, a batch of one
                    if not self._step_locked() and not feed.done:
                        raise RuntimeError("the engine core could not schedule a lone sequence")
            else:
                feed.parked = True
                self.busy -= 1
                self.cond.notify_all()
                while not feed.done:
                    self.cond.wait()   # _finish counted this thread busy again
            seq.feed = None
        if feed.error is not None:
            raise feed.error
        return feed

    # ---- the loop thread ---------------------------------------------------------------
    def has_work(self) -> bool:
        """Some feed waits to run (call under cond)."""
        return any(s.feed is not None and not s.feed.done for s in self.running) or bool(self.waiting)

    def step(self) -> bool:
        """One step on the loop thread (call under cond); False when nothing was ready."""
        if not self.has_work():
            return False
        deadline = time.monotonic() + GATHER_WAIT_S
        while self.busy > 0 and (left := deadline - time.monotonic()) > 0:
            self.cond.wait(left)
        return self._step_locked()

    def _step_locked(self) -> bool:
        plan = self._schedule()
        if not plan:
            return False
        self.cond.release()    # the request threads sample and stream while the model runs
        try:
            logits, error = self._execute(plan), None
        except Exception as exc:  # every fed sequence of the step gets the error
            logits, error = None, exc
        finally:
            self.cond.acquire()
        self._update(plan, logits, error)
        self.steps += 1
        self.cond.notify_all()
        return True

    # ---- schedule ------------------------------------------------------------------------
    def _schedule(self) -> list[tuple[Sequence, int]]:
        budget = self.max_num_batched_tokens
        plan: dict[Sequence, int] = {}
        preempted = False
        ready = [s for s in self.running if s.feed is not None and not s.feed.done]
        # decode rows (and short forced texts) first, then prefill chunks, each in admission
        # order: a long prompt takes what is left of the budget, never a decode row's place
        for seq in sorted(ready, key=lambda s: len(s.tokens) - s.num_computed > SHORT_FEED):
            if budget <= 0:
                break
            if seq not in self.running:   # preempted for an earlier one
                continue
            n = min(len(seq.tokens) - seq.num_computed, budget)
            while not self.manager.grow(seq, n):
                victim = self.running[-1]
                if victim is seq and len(self.running) == 1:
                    self._fail(seq, KVCacheTooSmall(self._too_small(seq)))
                    break
                self._preempt(victim)
                preempted = True
                budget += plan.pop(victim, 0)
                if victim is seq:
                    break
            else:
                plan[seq] = n
                budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs and not preempted:
            seq = self.waiting[0]
            feed = seq.feed
            if feed is None or feed.done:   # preempted between feeds: it comes back with its next one
                self.waiting.popleft()
                continue
            # at least one token runs (the logits come from it); an all-logits feed runs whole
            self.manager.admit(seq, feed.start if feed.all_logits else len(seq.tokens) - 1)
            n = min(len(seq.tokens) - seq.num_computed, budget)
            if not self.manager.grow(seq, n):
                self.manager.free(seq)
                if not self.running:
                    self.waiting.popleft()
                    self._fail(seq, KVCacheTooSmall(self._too_small(seq)))
                    continue
                break
            self.waiting.popleft()
            seq.preempted = False
            self.running.append(seq)
            plan[seq] = n
            budget -= n
        return list(plan.items())

    def _preempt(self, seq: Sequence) -> None:
        """Free a running sequence's blocks; it recomputes its tokens when admitted again."""
        self.running.remove(seq)
        self.manager.free(seq)
        seq.preempted = True
        self.preemptions += 1
        if seq.feed is not None and not seq.feed.done:
            seq.feed.rows = []   # recomputed from the feed's start when it is admitted again
            self.waiting.appendleft(seq)

    def _fail(self, seq: Sequence, error: BaseException) -> None:
        if seq in self.running:
            self.running.remove(seq)
        self.manager.free(seq)
        if seq.feed is not None:
            self._finish(seq.feed, error)

    def _too_small(self, seq: Sequence) -> str:
        return (f"the KV cache holds {self.pool.num_blocks * self.pool.block_size} positions "
                f"({self.pool.num_free} free); this sequence needs {len(seq.tokens)}: raise --kv-cache-memory")

    # ---- execute ---------------------------------------------------------------------------
    def _execute(self, plan: list[tuple[Sequence, int]]) -> np.ndarray:
        bs = self.pool.block_size
        ids, positions, seqs, logit_rows, samplings = [], [], [], [], []
        row = 0
        for seq, n in plan:
            start, end = seq.num_computed, seq.num_computed + n
            ids.extend(seq.tokens[start:end])
            positions.append(np.arange(start, end, dtype=np.int32))
            seqs.append(_slots(seq.blocks, bs, n, end, seq.state))
            wanted = self._rows_wanted(seq, start, end)
            logit_rows.extend(row + i - start for i in wanted)
            samplings.extend([seq.feed.sampling] * len(wanted))
            row += n
        if self.stepper is not None:
            return self.stepper.run(np.asarray(ids, np.int32), seqs, np.asarray(logit_rows, np.int32),
                                    samplings if any(x is not None for x in samplings) else None)
        b = self.model.backend
        out = self.model.forward_paged(b.ids(np.asarray(ids, np.int32)), b.ids(np.concatenate(positions)),
                                       self.kv, seqs, b.ids(np.asarray(logit_rows, np.int32)))
        return b.to_host(out)

    @staticmethod
    def _rows_wanted(seq: Sequence, start: int, end: int) -> range:
        """Token indexes in [start, end) whose logits the sequence's feed needs."""
        feed = seq.feed
        if feed.all_logits:
            return range(max(start, feed.start), end)
        return range(end - 1, end) if end == len(seq.tokens) else range(0)

    # ---- update ----------------------------------------------------------------------------
    def _update(self, plan, logits: np.ndarray | None, error: BaseException | None) -> None:
        at = 0
        for seq, n in plan:
            feed = seq.feed
            if error is not None:
                self._finish(feed, error)
                continue
            start = seq.num_computed
            wanted = len(self._rows_wanted(seq, start, start + n))
            if wanted and feed.sampling is not None:   # one row, sampled in the step
                feed.sample = logits[at]
            elif wanted:   # the stepper's results may be a list of rows (some of them sampled)
                rows = logits[at:at + wanted]
                feed.rows.append(np.stack(rows) if isinstance(rows, list) else rows)
            at += wanted
            if seq.blocks:  # not failed or preempted meanwhile
                self.manager.commit(seq, n)
                self.tokens_computed += n
            if seq.num_computed == len(seq.tokens):
                self._finish(feed)

    def _finish(self, feed: Feed, error: BaseException | None = None) -> None:
        """A feed is done: its thread is busy again from this moment (sampling, streaming), not
        from when it gets the lock back, or the next step would start without its next feed and
        the sequences would fall into alternate steps instead of one batch."""
        feed.error, feed.done = error, True
        if feed.parked:
            feed.parked = False
            self.busy += 1

    # ---- numbers ---------------------------------------------------------------------------
    def counts(self) -> dict:
        with self.cond:
            return {"running": len(self.running), "waiting": len(self.waiting),
                    "blocks_used": self.pool.num_used, "blocks_free": self.pool.num_free,
                    "pinned_blocks": self.manager.pinned_blocks(), "preemptions": self.preemptions,
                    "prefix_cache_queries": self.pool.hit_queries, "prefix_cache_hits": self.pool.hit_tokens,
                    **({} if self.manager.states is None else {
                        "state_slots_free": len(self.manager.states.free),
                        "pinned_states": self.manager.pinned_states()})}
