"""Packing what continue-as-new carries.

The server reads a run's whole input back every time an evicted agent wakes up, so a smaller
input wakes a hibernated agent faster. Most of it is bulk that compresses very well: the kept
state versions (successive versions are mostly alike), the dedup window and the event-log tail.
So the switch packs them (JSON, LZMA, base64) into `AgentStart.packed`, and the next run
unpacks them before anything else.

LZMA rather than zlib: what successive versions share lies a whole state apart, which LZMA's
dictionary covers and zlib's 32 KB window does not (figures in docs/decisions.md). Smaller
fields (inbox, schedules, children, ...) stay readable in the run's input in the Web UI; the
state itself is readable through query `state`.
"""

from __future__ import annotations

import base64
import lzma

from perennial.workflows.messages import AgentStart, CarriedBulk

#: The fastest preset: it already finds what versions share; higher ones cost 10x the time.
_PRESET = 0


def pack_carried(start: AgentStart) -> AgentStart:
    """`start` with its bulk moved into `packed`."""
    bulk = CarriedBulk(snapshots=start.snapshots, seen=start.seen, events=start.events)
    packed = base64.b64encode(lzma.compress(bulk.model_dump_json().encode(), preset=_PRESET))
    return start.model_copy(
        update={"snapshots": [], "seen": [], "events": [], "packed": packed.decode("ascii")}
    )


def unpack_carried(start: AgentStart) -> AgentStart:
    """`start` with `packed` unpacked into the plain fields (inputs carried before packing,
    and starts from outside, have nothing packed and come back as they are)."""
    if not start.packed:
        return start
    bulk = CarriedBulk.model_validate_json(lzma.decompress(base64.b64decode(start.packed)))
    return start.model_copy(
        update={
            "snapshots": bulk.snapshots + start.snapshots,
            "seen": bulk.seen + start.seen,
            "events": bulk.events + start.events,
            "packed": None,
        }
    )
