"""A batched step's layout in the block pool, as the paged kernels read it.

The batching core (engine/core.py) hands every layer of a step the same `seqs` (SeqSlots:
each sequence's rows, context and the pool slot of every position). The kernels need it as
three int32 arrays, built once per step on the host and uploaded in one copy:

    slots   [T]         the pool slot each row's k/v is stored at (kv_store's "positions")
    rows    [T]         each row's position in its sequence (how far back it attends)
    tables  [sum B_s]   each sequence's block numbers, one after another
    tiles   [n, 3]      (first row, rows, offset of its sequence's table): attention_paged's
                        blocks, at most `bq` rows each and never two sequences in one

A tile's rows share their K/V staging, so a prompt's chunk of 16 rows reads its keys once
per 16 / G rows; a decode row is a tile of its own. Which rows share a tile never changes a
row's result (attention.cu: batch invariance).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inloop.services.contract.backend import SeqSlots


@dataclass(frozen=True)
class PagedPlan:
    packed: np.ndarray   # int32: slots | positions | tables | tiles
    rows: int
    n_tables: int
    n_tiles: int

    @property
    def positions_at(self) -> int:
        return self.rows

    @property
    def tables_at(self) -> int:
        return 2 * self.rows

    @property
    def tiles_at(self) -> int:
        return 2 * self.rows + self.n_tables


def paged_plan(seqs: list[SeqSlots], block_size: int, bq: int) -> PagedPlan:
    """The step's slots, block tables and attention tiles (module docstring)."""
    slots, positions, tables, tiles = [], [], [], []
    row, table_at = 0, 0
    for s in seqs:
        first = s.context - s.rows
        slots.append(np.asarray(s.slots[first:s.context], np.int64))
        positions.append(np.arange(first, s.context, dtype=np.int64))
        blocks = np.asarray(s.slots[::block_size], np.int64) // block_size   # ceil(context / bs) blocks
        tables.append(blocks)
        for r in range(0, s.rows, bq):
            tiles.append((row + r, min(bq, s.rows - r), table_at))
        row += s.rows
        table_at += len(blocks)
    def flat(parts):
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    flat_slots, flat_tables = flat(slots), flat(tables)
    assert flat_slots.size == row and (flat_slots.size == 0 or flat_slots.max() < 2 ** 31)
    packed = np.concatenate([flat_slots, flat(positions), flat_tables,
                             np.asarray(tiles, np.int64).reshape(-1)]).astype(np.int32)
    return PagedPlan(packed, row, int(flat_tables.size), len(tiles))
