"""Parsing CloudEvents: the quick path for usual events agrees with the full parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bp_openmeter.cloudevents_in import _plain_event, parse_event
from bp_openmeter.problems import Problem

NOW = "2024-05-01T10:00:00Z"
TEXT = st.one_of(st.text(max_size=6), st.just(""), st.just("a\x00b"), st.text(min_size=1020, max_size=1030))
ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    TEXT,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
TIMES = st.one_of(
    st.just("2024-05-01T10:00:00.5Z"),
    st.just("2024-05-01T10:00:00+02:00"),
    st.just("2024-02-30T00:00:00Z"),
    st.just("yesterday"),
    st.just("2024-05-01T10:00:00.500Z"),
    ANY,
)
KEYS = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "data",
    "datacontenttype",
    "dataschema",
    "data_base64",
    "ext1",
    "Bad-Name",
]


@st.composite
def events(draw):
    event = {
        "specversion": "1.0",
        "id": draw(TEXT),
        "source": draw(TEXT),
        "type": draw(TEXT),
        "subject": draw(TEXT),
        "time": draw(TIMES),
        "data": draw(ANY),
    }
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=3)):
        if draw(st.booleans()):
            event.pop(key, None)
        else:
            event[key] = draw(st.one_of(ANY, st.just("1.0"), st.just("application/json")))
    return draw(st.one_of(st.just(event), ANY))


@settings(max_examples=5000, deadline=None)
@given(events())
def test_the_quick_path_accepts_only_what_the_parser_accepts_and_alike(event):
    quick = _plain_event(event, NOW)
    try:
        full = parse_event(event, NOW, "[0]")
    except Problem:
        assert quick is None
        return
    assert quick is None or quick == full


def test_the_quick_path_takes_the_usual_event():
    event = {
        "specversion": "1.0",
        "id": "1",
        "source": "s",
        "type": "t",
        "subject": "x",
        "time": "2024-05-01T10:00:00Z",
        "data": {"v": 1},
    }
    assert _plain_event(event, NOW) == parse_event(event, NOW, "")
    assert _plain_event({k: v for k, v in event.items() if k != "time"}, NOW).time == NOW
