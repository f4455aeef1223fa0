"""DSJSON records: VW's conventions, the round trip, and what VW's own parsers make of them."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vowpalwabbit import pyvw

from bandit.errors import (
    InvalidActionsError,
    InvalidDistributionError,
    InvalidFeaturesError,
    InvalidFeedbackError,
    LogFormatError,
)
from policies import Action
from policies.dsjson import (
    LOG_NAME,
    DSJSONReader,
    action_id_key,
    dsjson_line,
    dsjson_record,
    log_file_name,
    log_files,
    logged_example,
    parse_dsjson_record,
    read_action_id,
    read_file,
)
from policies.vwtext import reward_to_cost, to_vw_lines

WHEN = datetime(2026, 11, 27, 23, 15, 0, 250_000, tzinfo=UTC)

# Values VW's text parser and its JSON parser read alike (see
# test_long_decimals_are_read_differently_by_the_two_parsers for values they do not).
CONTEXT: dict[str, dict[str, Any]] = {
    "user": {"tier": "gold", "age": 0.25, "visits": 3, "zero": 0.0, "city": "São Paulo|x:y"},
    "time": {"hour": 2, "weekend": 1.0, "_bias": "on", "_weight": 0.5},
}
ACTIONS = [
    Action("item-0", {"item": {"kind": "k0", "size": 0.5}, "price": {"eur": 0.75}}),
    Action("item 1", {"item": {"kind": "50%", "size": -1.5}}),
    Action("item-2"),
]
PROBABILITIES = (0.25, 0.5, 0.25)


def _record(**changes: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "context": CONTEXT,
        "actions": ACTIONS,
        "chosen": 2,
        "probabilities": PROBABILITIES,
        "reward": 1.0,
        "event_id": "evt-7",
        "timestamp": WHEN,
    }
    arguments.update(changes)
    return dsjson_record(**arguments)


@pytest.fixture
def vw_text() -> Iterator[pyvw.Workspace]:
    with pyvw.Workspace("--cb_explore_adf --quiet") as workspace:
        yield workspace


@pytest.fixture
def vw_json() -> Iterator[pyvw.Workspace]:
    with pyvw.Workspace("--cb_explore_adf --dsjson --quiet") as workspace:
        yield workspace


def _features(examples: list[pyvw.Example]) -> list[dict[str, list[tuple[int, float]]]]:
    """Per example, per namespace letter: the (hash, value) pairs VW built, sorted."""
    built = []
    for example in examples:
        letters = [chr(example.namespace(i)) for i in range(example.num_namespaces())]
        built.append(
            {
                letter: sorted(
                    (example.feature(letter, j), example.feature_weight(letter, j))
                    for j in range(example.num_features_in(letter))
                )
                for letter in letters
            }
        )
    return built


def _labels(examples: list[pyvw.Example]) -> list[list[tuple[float, float]]]:
    kind = pyvw.LabelType.CONTEXTUAL_BANDIT
    return [[(c.cost, c.probability) for c in e.get_label(kind).costs] for e in examples]


def test_hand_written_record_pins_vw_conventions() -> None:
    """Cost is -reward, `_label_Action` and `a` are 1-based, `_labelIndex` is 0-based."""
    record = dsjson_record(
        {"u": {"x": 1.5}},
        [Action("a"), Action("b"), Action("c")],
        chosen=0,
        probabilities=[0.1, 0.2, 0.7],
        reward=0.5,
        event_id="evt-1",
        timestamp=WHEN,
        extra={"policy": "vw"},
    )
    assert record == {
        "_label_cost": -0.5,
        "_label_probability": 0.1,
        "_label_Action": 1,
        "_labelIndex": 0,
        "Timestamp": "2026-11-27T23:15:00.250000Z",
        "Version": "1",
        "EventId": "evt-1",
        "a": [1, 3, 2],
        "c": {
            "cu": {"x": 1.5},
            "_multi": [{"id": {"id=a": 1}}, {"id": {"id=b": 1}}, {"id": {"id=c": 1}}],
        },
        "p": [0.1, 0.7, 0.2],
        "_sb": {"policy": "vw"},
    }
    assert record["_label_cost"] == reward_to_cost(0.5)


def test_given_ranking_orders_a_and_p() -> None:
    """`a` and `p` follow the given 0-based ranking, shifted to 1-based."""
    record = _record(ranking=[2, 0, 1])
    assert record["a"] == [3, 1, 2]
    assert record["p"] == [0.25, 0.25, 0.5]
    assert (record["_label_Action"], record["_labelIndex"]) == (3, 2)


def test_features_are_written_as_vw_text_names() -> None:
    """Strings become `name=value` keys worth 1, escaped as in text; `_` names move aside.

    The action id is the namespace `id`, written and escaped as the text lines' `|id id=`.
    """
    record = _record()
    assert record["c"]["cuser"] == {
        "tier=gold": 1,
        "age": 0.25,
        "visits": 3,
        "zero": 0.0,
        "city=São%20Paulo%7Cx%3Ay": 1,
    }
    assert record["c"]["ctime"] == {
        "hour": 2,
        "weekend": 1.0,
        "_text": "_bias=on",
        "_sb": {"_weight": 0.5},
    }
    assert record["c"]["_multi"][1] == {
        "aitem": {"kind=50%25": 1, "size": -1.5},
        "id": {"id=item%201": 1},
    }
    assert record["c"]["_multi"][2] == {"id": {"id=item-2": 1}}


def test_timestamp_is_written_in_utc() -> None:
    """An aware timestamp in another zone is logged as UTC with a Z."""
    record = _record(timestamp=datetime(2026, 11, 28, 0, 15, tzinfo=timezone(timedelta(hours=1))))
    assert record["Timestamp"] == "2026-11-27T23:15:00.000000Z"


def test_record_reads_back_as_it_was_given() -> None:
    """parse_dsjson_record returns the context, actions, indices and reward given, exactly."""
    back = parse_dsjson_record(json.loads(json.dumps(_record(ranking=[2, 1, 0], extra={"k": 1}))))
    assert back.context == CONTEXT
    assert back.actions == ACTIONS
    assert (back.chosen, back.probability, back.reward) == (2, 0.25, 1.0)
    assert back.probabilities == PROBABILITIES
    assert back.ranking == (2, 1, 0)
    assert (back.event_id, back.timestamp, back.extra) == ("evt-7", WHEN, {"k": 1})


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"probabilities": (0.5, 0.5)}, InvalidDistributionError, r"one probability per action"),
        ({"probabilities": (0.5, 0.6, 0.1)}, InvalidDistributionError, r"sum to 1"),
        ({"chosen": 3}, InvalidFeedbackError, r"`chosen` must be an index in \[0, 3\), got 3"),
        ({"reward": math.nan}, InvalidFeedbackError, r"`reward` must be finite, got nan"),
        ({"ranking": [0, 1, 2]}, InvalidFeedbackError, r"`chosen` \(2\) first, got \[0, 1, 2\]"),
        ({"ranking": [2, 2, 1]}, InvalidFeedbackError, r"every index in \[0, 3\) once"),
        ({"timestamp": datetime(2026, 1, 1)}, InvalidFeedbackError, r"timezone-aware"),
        ({"context": {"u": {"a=b": 1.0}}}, InvalidFeaturesError, r"u\.a=b must not hold '='"),
        ({"context": {"u": {"x": math.inf}}}, InvalidFeaturesError, r"u\.x must be finite"),
        (
            {"actions": [Action("a"), Action("a"), Action("b")]},
            InvalidActionsError,
            r"distinct ids",
        ),
    ],
)
def test_impossible_records_are_refused(
    changes: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Each broken input raises an error naming the argument and the rule."""
    with pytest.raises(error, match=match):
        _record(**changes)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda r: r.pop("_label_cost"), r"`_label_cost` is missing"),
        (
            lambda r: [r.pop("_labelIndex"), r.pop("_label_Action")],
            r"`_labelIndex` and `_label_Action` are missing",
        ),
        (
            lambda r: r.update(_label_Action=2),
            r"`_label_Action` \(2\) must equal `_labelIndex` \+ 1",
        ),
        (lambda r: r.update(a=[3, 1, 1]), r"`a` must list each action once, got 1 twice"),
        (lambda r: r.update(p=[0.25, 0.5]), r"`p` must hold one probability per action \(3\)"),
        (lambda r: r.update(p=[0.25, 0.25, 0.25]), r"`p` must sum to 1"),
        (lambda r: r.update(_label_probability=0.5), r"must equal the chosen action's entry"),
        (lambda r: r.update(Timestamp="yesterday"), r"`Timestamp` must look like"),
        (lambda r: r.pop("EventId"), r"lacks the field 'EventId'"),
        (lambda r: r.update(_sb=[1]), r"`_sb` must be an object"),
        (lambda r: r["c"].update(user={"x": 1}), r"namespace 'user' in `c` must start with 'c'"),
        (lambda r: r["c"]["_multi"][0].pop("id"), r"`c._multi\[0\]` must hold the action id"),
        (
            lambda r: r["c"]["_multi"][1]["id"].update({"id=other": 1}),
            r"`c._multi\[1\]` must hold the action id as namespace `id`",
        ),
        (lambda r: r["c"]["_multi"][2].update(id={"name=item-2": 1}), r"\{\"id=<id>\": 1\}"),
        (
            lambda r: [r["c"]["_multi"].append("x"), r["a"].append(4), r["p"].append(0.0)],
            r"`p` must hold probabilities in \(0, 1\], got p\[3\] = 0.0",
        ),
        (lambda r: r["c"]["_multi"].append("x"), r"`a` must list each of the 4 actions"),
        (lambda r: r["c"]["cuser"].update(x="y"), r"feature cuser.x must be a number"),
    ],
)
def test_broken_records_are_refused_on_reading(edit: Any, match: str) -> None:
    """A record whose fields are missing or disagree raises LogFormatError naming them."""
    record = json.loads(json.dumps(_record()))
    edit(record)
    with pytest.raises(LogFormatError, match=match):
        parse_dsjson_record(record)


def test_vw_json_parser_builds_the_features_vw_text_parser_builds(
    vw_text: pyvw.Workspace, vw_json: pyvw.Workspace
) -> None:
    """VW parses our DSJSON line into the text lines' hashes and values, action ids too."""
    record = _record()
    text = vw_text.parse(to_vw_lines(CONTEXT, ACTIONS, (2, reward_to_cost(1.0), 0.25)))
    parsed = vw_json.parse(json.dumps(record))
    from_text, from_json = _features(text), _features(parsed)
    assert len(from_json) == len(from_text) == 1 + len(ACTIONS)
    # "_weight" is numeric and named with "_": VW's JSON parser cannot read it.
    hidden = vw_text.hash_feature("_weight", vw_text.hash_space("ctime")) & (2**18 - 1)
    from_text[0]["c"] = [pair for pair in from_text[0]["c"] if pair[0] != hidden]
    assert from_json == from_text
    assert _labels(parsed) == _labels(text)
    assert _labels(parsed)[1 + 2] == [(-1.0, 0.25)]
    vw_text.finish_example(text)
    vw_json.finish_example(parsed)


def test_vw_json_parser_puts_the_label_on_the_chosen_action(vw_json: pyvw.Workspace) -> None:
    """VW reads `_labelIndex` 0-based: the cost lands on the chosen action's example."""
    for chosen in range(3):
        parsed = vw_json.parse(json.dumps(_record(chosen=chosen, reward=2.0)))
        labels = _labels(parsed)
        assert [i for i, costs in enumerate(labels[1:]) if costs] == [chosen]
        assert labels[1 + chosen] == [(-2.0, PROBABILITIES[chosen])]
        vw_json.finish_example(parsed)


def test_vw_json_parser_reads_the_action_id(
    vw_text: pyvw.Workspace, vw_json: pyvw.Workspace
) -> None:
    """VW's DSJSON parser builds namespace `i` (the id) with the text lines' hashes."""
    actions = [Action("x"), Action("50% off|a:b"), Action("São Paulo"), Action("k=v")]
    text = vw_text.parse(to_vw_lines({}, actions, (0, -1.0, 0.25)))
    record = dsjson_record({}, actions, 0, [0.25] * 4, 1.0, event_id="e", timestamp=WHEN)
    parsed = vw_json.parse(json.dumps(record))
    from_text, from_json = _features(text)[1:], _features(parsed)[1:]
    assert [set(features) - {"\x80"} for features in from_json] == [{"i"}] * len(actions)
    assert [f["i"] for f in from_json] == [f["i"] for f in from_text]
    assert len({f["i"][0][0] for f in from_json}) == len(actions)  # one hash per id
    expected = vw_text.hash_feature("id=x", vw_text.hash_space("id")) & (2**18 - 1)
    assert from_json[0]["i"] == [(expected, 1.0)]
    assert [a.id for a in parse_dsjson_record(json.loads(json.dumps(record))).actions] == [
        a.id for a in actions
    ]
    vw_text.finish_example(text)
    vw_json.finish_example(parsed)


def test_long_decimals_are_read_differently_by_the_two_parsers(
    vw_text: pyvw.Workspace, vw_json: pyvw.Workspace
) -> None:
    """The documented gap: VW's text parser is a few float32 ulps off where JSON rounds right."""
    value = 0.24273997354306764
    text = vw_text.parse(to_vw_lines({"u": {"x": value}}, [Action("a")], (0, -1.0, 1.0)))
    parsed = vw_json.parse(
        json.dumps(
            dsjson_record(
                {"u": {"x": value}}, [Action("a")], 0, [1.0], 1.0, event_id="e", timestamp=WHEN
            )
        )
    )
    read_text = text[0].feature_weight("c", 0)
    read_json = parsed[0].feature_weight("c", 0)
    as_float32 = struct.unpack("f", struct.pack("f", value))[0]
    assert read_json == as_float32
    assert read_text != read_json
    assert read_text == pytest.approx(read_json, rel=4 * 2**-23)
    vw_text.finish_example(text)
    vw_json.finish_example(parsed)


# -- round trips: the writer, then the reader -----------------------------------------------

# The id rule (bandit.schemas: `^[A-Za-z0-9][A-Za-z0-9_.:-]*$`), every character of it
# drawn: ':' is the one VW text escapes.
ID_ALPHABET = "ABCXYZabcxyz0189_.:-"
rule_ids = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("AZaz09"),
    st.text(alphabet=ID_ALPHABET, max_size=12),
)
offers = st.lists(rule_ids, min_size=1, max_size=6, unique=True)


def _distribution(n: int, chosen: int) -> list[float]:
    """A distribution over `n` actions, the chosen one at 0.5 (or 1 alone)."""
    if n == 1:
        return [1.0]
    rest = 0.5 / (n - 1)
    return [0.5 if i == chosen else rest for i in range(n)]


@given(ids=offers, data=st.data())
def test_rule_ids_round_trip_through_both_writers_and_the_reader(
    ids: list[str], data: st.DataObject
) -> None:
    """Ids with every character the id rule allows come back from the log unchanged.

    Both writers (the general one and the stream worker's one-pass one) write the same
    line; the reader gives back the ids, the choice, its probability and the reward; and
    the VW text line holds each id escaped as the DSJSON key does.
    """
    chosen = data.draw(st.integers(0, len(ids) - 1))
    probabilities = _distribution(len(ids), chosen)
    ranking = [chosen, *(i for i in range(len(ids)) if i != chosen)]
    actions = [Action(action_id, {"item": {"n": float(i + 1)}}) for i, action_id in enumerate(ids)]
    general = dsjson_line(
        dsjson_record(
            {"u": {"x": 1.5}},
            actions,
            chosen,
            probabilities,
            0.5,
            event_id="evt-1",
            timestamp=WHEN,
            ranking=ranking,
            extra={"policy": "vw"},
        )
    )
    fast = logged_example(
        {"u": {"x": 1.5}},
        ids,
        [action.features for action in actions],
        chosen,
        probabilities,
        reward=0.5,
        event_id="evt-1",
        timestamp=WHEN,
        ranking=ranking,
        extra={"policy": "vw"},
    )
    assert fast is not None
    assert fast.dsjson == general
    row = DSJSONReader().line(general)
    assert row is not None
    assert row.action_ids == ids
    assert row.chosen_action_id == ids[chosen]
    assert (row.chosen, row.propensity, row.reward) == (chosen, probabilities[chosen], 0.5)
    assert row.action_features == [action.features for action in actions]
    assert row.ranking == tuple(ranking)
    assert row.extra == {"policy": "vw"}
    assert parse_dsjson_record(json.loads(general)).actions == actions
    for action_id, line in zip(ids, fast.text.splitlines()[1:], strict=True):
        assert line.endswith(f" |id {action_id_key(action_id)}")


@given(ids=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4, unique=True))
def test_any_id_round_trips_through_the_general_writer(ids: list[str]) -> None:
    """Whatever an id holds (blanks, '%', '|', quotes, other scripts), it reads back as given."""
    line = dsjson_line(
        dsjson_record(
            {}, [Action(i) for i in ids], 0, _distribution(len(ids), 0), 1.0,
            event_id="e", timestamp=WHEN,
        )
    )  # fmt: skip
    row = DSJSONReader(features=False).line(line)
    assert row is not None
    assert row.action_ids == ids
    assert [read_action_id({action_id_key(i): 1}) for i in ids] == ids


def test_read_file_names_the_line_and_the_field(tmp_path: Path) -> None:
    """A bad line stops read_file with `file:line: field rule`, or is left out when asked."""
    good = dsjson_line(_record())
    bad = dsjson_line({**_record(), "p": [0.5, 0.5]})
    path = tmp_path / "log.dsjson"
    path.write_bytes(good + b"\n" + bad + b'{"half": ')
    with pytest.raises(LogFormatError, match=r"log\.dsjson:3: `p` must hold one probability") as e:
        list(read_file(path))
    assert e.value.reason == "ragged"
    rows = list(read_file(path, skip_bad=True))
    assert [row.event_id for row in rows] == ["evt-7"]
    assert list(read_file(path, skip_bad=True, containing=b'"nothing"')) == []


def test_log_files_are_found_and_named_as_the_sink_names_them(tmp_path: Path) -> None:
    """log_file_name's names match LOG_NAME, and log_files finds them at any depth."""
    name = log_file_name(WHEN, 12)
    assert name == "decisions-20261127T231500Z-0012.dsjson"
    assert LOG_NAME.match(name)
    (tmp_path / "worker-1").mkdir()
    (tmp_path / "worker-1" / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a log")
    assert log_files(tmp_path) == [tmp_path / "worker-1" / name]
    assert log_files(tmp_path / "absent") == []


def test_personalizers_single_precision_label_probability_is_read() -> None:
    """Personalizer wrote `_label_probability` as a float widened (0.8500000238418579), `p` as 0.85.

    The two are the same single-precision number: the row reads, its propensity the
    entry of `p`; a label probability that is another float is still refused.
    """
    line = {
        "_label_cost": -1.0,
        "_label_probability": 0.8500000238418579,
        "_label_Action": 2,
        "_labelIndex": 1,
        "a": [2, 1, 3],
        "c": {"FromUrl": [{"x": "y"}], "_multi": [{"_tag": "a"}, {"_tag": "b"}, {"_tag": "c"}]},
        "p": [0.85, 0.1, 0.05],
    }
    row = DSJSONReader().read(line)
    assert row is not None
    assert (row.chosen, row.propensity, row.action_ids) == (1, 0.85, ["a", "b", "c"])
    with pytest.raises(LogFormatError, match="must equal the chosen action's entry"):
        DSJSONReader().read({**line, "_label_probability": 0.8500001})


def _offer(features: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """A line of our layout offering `ids`, each action with `features` in namespace ``item``."""
    return {
        "_label_cost": 0,
        "_labelIndex": 0,
        "a": list(range(1, len(ids) + 1)),
        "p": [1 / len(ids)] * len(ids),
        "c": {"_multi": [{"aitem": dict(features), "id": {action_id_key(i): 1}} for i in ids]},
    }


@pytest.mark.parametrize("features", [True, False])
def test_an_action_read_before_is_read_again_as_its_line_says(features: bool) -> None:
    """A reader remembers the actions it read; a line that changes one is read as it is.

    The same action again gives the same features; another value under the same id,
    or the id twice in a row, or an id namespace of another shape, is read (or refused)
    as if the action were new.
    """
    reader = DSJSONReader(features=features)
    first = reader.read(_offer({"size": 1}, ["x", "y"]))
    again = reader.read(_offer({"size": 1}, ["y", "x"]))
    changed = reader.read(_offer({"size": 2}, ["x", "y"]))
    assert first is not None
    assert again is not None
    assert changed is not None
    assert (first.action_ids, again.action_ids) == (["x", "y"], ["y", "x"])
    if features:
        assert first.action_features == again.action_features == [{"item": {"size": 1}}] * 2
        assert changed.action_features == [{"item": {"size": 2}}] * 2
    else:
        assert first.action_features is None
        assert first.context is None
    with pytest.raises(LogFormatError, match="ids must be distinct"):
        reader.read(_offer({"size": 1}, ["x", "x"]))
    line = _offer({"size": 1}, ["x", "y"])
    line["c"]["_multi"][1]["id"] = {"id=y": 1, "id=z": 1}
    other = reader.read(line)
    assert other is not None
    assert (other.action_ids, other.ours) == (None, False)
