"""Unit tests of the entity's pure parts: event log, versions, dedup window, messages, errors.
No Temporal here; everything else about the entity is tested against a real server."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, JsonValue, ValidationError
from pydantic_core import to_json
from temporalio.exceptions import ApplicationError

from perennial.workflows.dedup import SeenWindow
from perennial.workflows.errors import (
    InvalidMessage,
    InvalidRequest,
    TurnFailed,
    VersionNotKept,
    from_application_error,
    parse_input,
    to_application_error,
)
from perennial.workflows.eventlog import EventLog
from perennial.workflows.messages import (
    EVENT_PREVIEW_CHARS,
    AgentStart,
    EventsQuery,
    Message,
    MessageWake,
    ReceivedEvent,
    SeenMessage,
    Snapshot,
    preview,
)
from perennial.workflows.notes import NotesAgent
from perennial.workflows.packing import pack_carried, unpack_carried
from perennial.workflows.versions import Versions, json_size


def _text(state: dict[str, JsonValue]) -> str:
    """A state as the JSON text a snapshot keeps."""
    return to_json(state).decode()


AT = datetime(2026, 1, 1, tzinfo=UTC)


def _event(offset: int) -> ReceivedEvent:
    return ReceivedEvent(offset=offset, at=AT, message_id=f"m{offset}", text=f"t{offset}")


def _log(count: int, *, capacity: int) -> EventLog:
    log = EventLog(capacity=capacity, events=[], next_offset=1)
    for _ in range(count):
        log.append(_event(log.next_offset))
    return log


# --------------------------------------------------------------------------- event log


def test_empty_event_log_pages() -> None:
    log = EventLog(capacity=5, events=[], next_offset=1)
    page = log.page(after=0, limit=None)
    assert (page.events, page.next_after, page.oldest_offset, page.missed) == ([], 0, 1, 0)
    assert not log.has_after(0)
    assert log.last_offset == 0


def test_event_log_offsets_must_follow_on() -> None:
    log = _log(2, capacity=5)
    with pytest.raises(ValueError):
        log.append(_event(2))
    with pytest.raises(ValueError):
        log.append(_event(4))
    log.append(_event(3))
    assert log.last_offset == 3
    with pytest.raises(ValueError):
        EventLog(capacity=0, events=[], next_offset=1)


def test_event_log_keeps_the_newest_and_reports_what_a_reader_missed() -> None:
    log = _log(8, capacity=3)
    assert [e.offset for e in log.tail()] == [6, 7, 8]
    assert log.oldest_offset == 6

    page = log.page(after=0, limit=None)
    assert [e.offset for e in page.events] == [6, 7, 8]
    assert (page.next_after, page.oldest_offset, page.missed) == (8, 6, 5)

    page = log.page(after=4, limit=1)
    assert [e.offset for e in page.events] == [6]
    assert (page.next_after, page.missed) == (6, 1)

    page = log.page(after=6, limit=10)
    assert [e.offset for e in page.events] == [7, 8]
    assert page.missed == 0

    page = log.page(after=8, limit=None)
    assert (page.events, page.next_after, page.missed) == ([], 8, 0)
    assert log.has_after(7) and not log.has_after(8)


def test_event_log_pages_cover_everything_once() -> None:
    log = _log(10, capacity=100)
    seen, after = [], 0
    while page := log.page(after=after, limit=3).events:
        seen += [e.offset for e in page]
        after = page[-1].offset
    assert seen == list(range(1, 11))


def test_recorded_events_are_built_when_read_and_read_like_appended_ones() -> None:
    log = EventLog(capacity=3, events=[], next_offset=1)
    for offset in range(1, 5):  # the first scrolls out unread: it is never built
        assert log.record(ReceivedEvent, at=AT, message_id=f"m{offset}", text=f"t{offset}") == (
            offset
        )
    assert log.oldest_offset == 2 and log.last_offset == 4
    page = log.page(after=2, limit=1)
    assert page.events == [_event(3)] and page.missed == 0
    assert log.tail() == [_event(2), _event(3), _event(4)]
    assert log.page(after=0, limit=None).events == log.tail()  # built once, kept built
    log.append(_event(5))
    assert [e.offset for e in log.tail()] == [3, 4, 5]
    # Fields are validated when the event is built: a wrong one fails its first reader.
    log.record(ReceivedEvent, at=AT, message_id=None, text="t6")
    with pytest.raises(ValidationError):
        log.tail()


def test_event_log_carried_across_continue_as_new_keeps_counting() -> None:
    old = _log(7, capacity=4)
    new = EventLog(capacity=4, events=old.tail(), next_offset=old.next_offset)
    assert [e.offset for e in new.tail()] == [4, 5, 6, 7]
    new.append(_event(8))
    assert [e.offset for e in new.tail()] == [5, 6, 7, 8]
    # A smaller capacity after a deploy keeps the newest events.
    smaller = EventLog(capacity=2, events=old.tail(), next_offset=old.next_offset)
    assert [e.offset for e in smaller.tail()] == [6, 7]
    assert smaller.next_offset == 8


# --------------------------------------------------------------------------- versions


def test_versions_number_commits_from_zero_and_keep_the_newest() -> None:
    versions = Versions(keep=3, max_bytes=10_000, snapshots=[])
    assert versions.empty
    for counter in range(5):
        versions.commit(_text({"counter": counter}))
    assert versions.current == Snapshot(version=4, state={"counter": 4})
    assert versions.kept() == [2, 3, 4]
    assert versions.get(2).state == {"counter": 2}
    with pytest.raises(VersionNotKept) as err:
        versions.get(1)
    assert "[2, 3, 4]" in str(err.value)
    with pytest.raises(ValueError):
        Versions(keep=0, max_bytes=10_000, snapshots=[])


def test_versions_carried_across_continue_as_new() -> None:
    old = Versions(keep=3, max_bytes=10_000, snapshots=[])
    for counter in range(4):
        old.commit(_text({"counter": counter}))
    new = Versions(keep=3, max_bytes=10_000, snapshots=old.snapshots())
    assert new.kept() == [1, 2, 3]
    assert new.commit(_text({"counter": 99})) == 4
    assert Versions(keep=2, max_bytes=10_000, snapshots=old.snapshots()).kept() == [2, 3]


def test_versions_are_bounded_by_bytes_but_keep_the_current_one() -> None:
    def state(size: int) -> dict[str, JsonValue]:
        return {"blob": "x" * (size - len('{"blob":""}'))}

    assert json_size(state(100)) == 100
    versions = Versions(keep=10, max_bytes=250, snapshots=[])
    for _ in range(4):
        versions.commit(_text(state(100)))
    assert versions.kept() == [2, 3]  # 200 bytes; a third would make 300
    versions.commit(_text(state(1000)))  # larger than the budget on its own: still kept, alone
    assert versions.kept() == [4]
    assert versions.current.state == state(1000)
    carried = Versions(keep=10, max_bytes=250, snapshots=[*versions.snapshots()])
    assert carried.kept() == [4]


def test_committed_snapshots_survive_a_round_trip() -> None:
    versions = Versions(keep=2, max_bytes=10_000, snapshots=[])
    versions.commit(_text({"notes": ["a", "b"], "nested": {"x": [1, 2.5, None, True]}}))
    wire = [s.model_dump_json() for s in versions.snapshots()]
    back = [Snapshot.model_validate_json(w) for w in wire]
    assert back == versions.snapshots()


def test_continue_as_new_packs_its_bulk_and_the_next_run_unpacks_it() -> None:
    notes = [f"note {i}" for i in range(2_000)]
    versions = Versions(keep=6, max_bytes=1_000_000, snapshots=[])
    for n in range(1_995, 2_001):
        versions.commit(_text({"counter": n, "notes": notes[:n]}))
    seen = [_seen(f"id{i}") for i in range(300)]
    wakes = [MessageWake(message=Message(text="later", id="m1"), received_at=AT)]
    start = AgentStart(
        snapshots=versions.snapshots(), seen=seen, events=[_event(i) for i in range(1, 51)],
        next_offset=51, generation=3, inbox=wakes,
    )  # fmt: skip
    packed = pack_carried(start)
    assert packed.snapshots == packed.seen == packed.events == [] and packed.packed
    assert packed.generation == 3 and packed.next_offset == 51
    plain_size, packed_size = json_size(start), json_size(packed)
    assert packed_size * 20 < plain_size, (packed_size, plain_size)
    # What the next run sees (after the payload's JSON round trip) is what was carried.
    carried = AgentStart.model_validate(json.loads(json.dumps(packed.wire())))
    assert unpack_carried(carried) == start
    assert unpack_carried(start) is start  # nothing packed: as it is
    # Defaults stay off the wire: a worker that predates a field still reads the input.
    assert AgentStart().wire() == {} and "packed" not in start.wire()


def test_snapshots_keep_json_text_and_read_inputs_carried_in_the_parsed_form() -> None:
    """Runs from before snapshots were text carried `state` parsed: a new worker reads both."""
    legacy = Snapshot.model_validate({"version": 3, "state": {"counter": 3, "notes": ["x"]}})
    assert legacy.state_json == '{"counter":3,"notes":["x"]}'
    assert legacy.state == {"counter": 3, "notes": ["x"]}
    carried = Versions(keep=2, max_bytes=10_000, snapshots=[legacy])
    assert carried.commit(legacy.state_json) == 4
    assert "state_json" in legacy.model_dump()
    with pytest.raises(ValidationError):
        Snapshot.model_validate({"version": 1})


# --------------------------------------------------------------------------- dedup


def _seen(message_id: str, version: int = 1) -> SeenMessage:
    return SeenMessage(id=message_id, reply=f"reply {message_id}", version=version)


def _fields(entry: SeenMessage) -> tuple[str, str | None, int]:
    return entry.id, entry.reply, entry.version


def test_seen_window_remembers_replies_and_forgets_the_oldest() -> None:
    window = SeenWindow(capacity=3, max_bytes=10_000, seen=[])
    for i in range(3):
        window.remember(*_fields(_seen(f"m{i}", i)))
    assert "m0" in window
    assert window.get("m1") == _seen("m1", 1)
    window.remember(*_fields(_seen("m3", 3)))
    assert "m0" not in window and window.get("m0") is None
    assert [e.id for e in window.entries()] == ["m1", "m2", "m3"]
    # Remembering an id again refreshes it: it becomes the newest.
    window.remember(*_fields(_seen("m1", 1)))
    window.remember(*_fields(_seen("m4", 4)))
    assert [e.id for e in window.entries()] == ["m3", "m1", "m4"]
    with pytest.raises(ValueError):
        SeenWindow(capacity=0, max_bytes=10_000, seen=[])


def test_seen_window_carried_across_continue_as_new() -> None:
    old = SeenWindow(capacity=4, max_bytes=10_000, seen=[])
    for i in range(4):
        old.remember(*_fields(_seen(f"m{i}")))
    new = SeenWindow(capacity=4, max_bytes=10_000, seen=old.entries())
    assert all(f"m{i}" in new for i in range(4))
    smaller = SeenWindow(capacity=2, max_bytes=10_000, seen=old.entries())
    assert [e.id for e in smaller.entries()] == ["m2", "m3"]


def test_seen_window_is_bounded_by_bytes_too() -> None:
    window = SeenWindow(capacity=100, max_bytes=60, seen=[])  # each entry below is 26 bytes
    for i in range(5):
        window.remember(*_fields(_seen(f"m{i}")))
    assert [e.id for e in window.entries()] == ["m3", "m4"]
    huge = SeenMessage(id="big", reply="r" * 500, version=9)
    window.remember(*_fields(huge))  # over the budget alone: kept, alone (never lost)
    assert window.entries() == [huge]


# --------------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    "raw",
    [
        {"text": ""},
        {"text": " \n"},
        {"txt": "hi"},
        {"text": "hi", "extra": 1},
        {"text": "hi", "id": ""},
        {"text": "hi", "id": "x" * 201},
        "hi",
        ["hi"],
        {"text": None},
    ],
)
def test_bad_messages_are_invalid_message_errors(raw: object) -> None:
    with pytest.raises(InvalidMessage) as err:
        parse_input(Message, raw, error=InvalidMessage)
    assert str(err.value).startswith("invalid Message:")


def test_good_message_and_defaults() -> None:
    message = parse_input(Message, {"text": "hi", "data": {"k": [1, "2"]}}, error=InvalidMessage)
    assert (message.text, message.sender, message.id, message.data) == (
        "hi",
        None,
        None,
        {"k": [1, "2"]},
    )
    assert parse_input(EventsQuery, None) == EventsQuery(after=0, limit=None)
    with pytest.raises(InvalidRequest):
        parse_input(EventsQuery, {"after": -1})


class _TinyNotes(NotesAgent):
    max_message_bytes = 200
    max_text_chars = 120


@pytest.mark.parametrize(
    "message",
    [
        Message(text="a" * 10, id="m1"),  # measured by its length alone
        Message(text="a" * 120, sender="s" * 30, id="m2"),  # 170 ASCII bytes and the keys
        Message(text="a" * 100, id="m3"),
        Message(text="\x01" * 20, id="m4"),  # each character is a 6-byte escape
        Message(text="\x01" * 30, id="m5"),
        Message(text="\U0001f600" * 30, id="m6"),  # one character of JSON each
        Message(text="hi", id="m7", data={"k": "v" * 100}),
        Message(text="hi", id="m8", data={"k": "v" * 200}),
    ],
)
def test_an_agent_types_message_limits_count_json_bytes(message: Message) -> None:
    """The check gives the same answer whether it measures the message's JSON or bounds it
    by the lengths of its strings (6 characters of JSON per character at most)."""
    size = len(message.model_dump_json())
    if len(message.text) > _TinyNotes.max_text_chars or size > _TinyNotes.max_message_bytes:
        with pytest.raises(InvalidMessage) as err:
            _TinyNotes.check_message(message, agent_type="notes")
        assert "notes agents accept at most" in str(err.value)
    else:
        assert _TinyNotes.check_message(message, agent_type="notes") is message


def test_preview_shortens_long_texts_only() -> None:
    assert preview(None) is None
    assert preview("short") == "short"
    exact = "x" * EVENT_PREVIEW_CHARS
    assert preview(exact) == exact
    long = preview("y" * (EVENT_PREVIEW_CHARS + 50))
    assert long is not None and len(long) == EVENT_PREVIEW_CHARS and long.endswith("…")


# --------------------------------------------------------------------------- errors


def test_errors_round_trip_through_application_error() -> None:
    for err in (InvalidMessage("bad text"), VersionNotKept("gone"), InvalidRequest("nope")):
        app = to_application_error(err)
        assert isinstance(app, ApplicationError)
        assert (app.type, app.message, app.non_retryable) == (type(err).__name__, str(err), True)
        back = from_application_error(app)
        assert type(back) is type(err) and str(back) == str(err)


def test_turn_failed_keeps_its_details_through_application_error() -> None:
    app = to_application_error(TurnFailed("turn failed", error_type="ValueError", version=7))
    back = from_application_error(app)
    assert isinstance(back, TurnFailed)
    assert (str(back), back.error_type, back.version) == ("turn failed", "ValueError", 7)


def test_foreign_application_errors_are_not_ours() -> None:
    assert from_application_error(ApplicationError("boom", type="SomethingElse")) is None
    assert from_application_error(ApplicationError("boom")) is None


def test_parse_input_passes_models_through() -> None:
    class Thing(BaseModel):
        n: int = 0

    thing = Thing(n=3)
    assert parse_input(Thing, thing) is thing
    assert parse_input(Thing, None) == Thing()
