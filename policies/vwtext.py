r"""VW's text format, and VW's conventions: the one home of both.

Everything that writes Vowpal Wabbit's multi-line ``cb_explore_adf`` text, or needs its
rules, takes them from here: the namespaces (``c<name>`` for the context, ``a<name>``
for an action, ``id`` for the action id), the escaping of the characters that would
break a token (``%``, space, tab, line breaks, ``|``, ``:``), and the label. The DSJSON
decision log (:mod:`policies.dsjson`) writes its keys with the same tokens and the same
escapes, so VW's JSON parser hashes them as its text parser hashes these lines.

VW's conventions are also here, once: VW minimises a *cost* and numbers actions from 1;
the rest of streambandit maximises a *reward* and numbers actions from 0.
``cost = -reward`` (:func:`reward_to_cost`, :func:`cost_to_reward`) and VW's action
number is the index plus :data:`ACTION_BASE` (:func:`to_vw_action`,
:func:`from_vw_action`).

Examples
--------
>>> from policies import Action
>>> print("\n".join(to_vw_lines({"user": {"age": 0.5}}, [Action("a:1")], (0, -1.0, 1.0))))
shared |cuser age:0.5
0:-1.0:1.0 |id id=a%3A1
>>> unescape(escape("a:1 |x"))
'a:1 |x'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import orjson

from policies._types import Action, Context, FeatureRef, Features
from policies.errors import InvalidFeaturesError

__all__ = [  # noqa: RUF022 - plain sorted(), which tests/test_public_api.py checks
    "ACTION_BASE",
    "ACTION_PREFIX",
    "CONTEXT_PREFIX",
    "FeaturePieces",
    "ID_FEATURE",
    "ID_NAMESPACE",
    "ID_TOKEN",
    "SLOT_NAMESPACE",
    "SLOT_PREFIX",
    "cost_to_reward",
    "escape",
    "example_text",
    "filled",
    "from_vw_action",
    "label_text",
    "namespace_text",
    "needs_escaping",
    "reward_to_cost",
    "shared_line",
    "shared_line_of",
    "to_ccb_lines",
    "to_vw_action",
    "to_vw_lines",
    "unescape",
    "unescaped",
    "write_tokens",
]

# -- VW's conventions ---------------------------------------------------------------------

ACTION_BASE = 1
"""VW's number of the first action (``_label_Action``, DSJSON's ``a``); ours is 0."""


def reward_to_cost(reward: float) -> float:
    """VW learns costs; streambandit speaks rewards. ``cost = -reward``.

    Examples
    --------
    >>> reward_to_cost(1.0)
    -1.0
    """
    return -reward


def cost_to_reward(cost: float) -> float:
    """Return the reward a VW cost stands for: ``reward = -cost``.

    Examples
    --------
    >>> cost_to_reward(-0.5)
    0.5
    """
    return -cost


def to_vw_action(index: int) -> int:
    """Return VW's number of the action at 0-based `index`.

    Examples
    --------
    >>> to_vw_action(0)
    1
    """
    return index + ACTION_BASE


def from_vw_action(number: int) -> int:
    """Return the 0-based index of VW's action `number`.

    Examples
    --------
    >>> from_vw_action(1)
    0
    """
    return number - ACTION_BASE


# -- namespaces and escaping --------------------------------------------------------------

# Context and action namespaces are written ``c<name>`` and ``a<name>``, so no user
# namespace shares its letter; each action's id is the feature ``id=<id>`` in namespace
# ``id`` (VW's letter ``i``), which VW's JSON parser reads too, as it reads no key that
# starts with ``_``.
CONTEXT_PREFIX = "c"
"""Prefix of every context namespace (VW's interaction letter ``c``)."""
ACTION_PREFIX = "a"
"""Prefix of every action namespace (VW's interaction letter ``a``)."""
ID_NAMESPACE = "id"
"""The namespace holding an action's id (VW's interaction letter ``i``)."""
ID_FEATURE = "id"
"""The id's feature name: the id is the string feature ``id=<id>``."""
ID_TOKEN = f" |{ID_NAMESPACE} {ID_FEATURE}="
"""What precedes an (escaped) action id on its action's line."""
SLOT_PREFIX = "s"
"""Prefix of a slot's namespace in ``ccb_explore_adf`` text (VW's interaction letter ``s``)."""
SLOT_NAMESPACE = "_slot"
"""The context namespace that holds a slot's features, for a conditional contextual bandit
(:class:`policies.vwccb.VWCCBPolicy`): written on the ``ccb slot`` line, not the shared one."""

# Characters that would break VW's text format inside a feature name or value.
_ESCAPES = str.maketrans(
    {"%": "%25", " ": "%20", "\t": "%09", "\n": "%0A", "\r": "%0D", "|": "%7C", ":": "%3A"}
)
_UNESCAPES = {code: char for char, code in ((chr(k), v) for k, v in _ESCAPES.items())}
_UNESCAPE_RE = re.compile("|".join(re.escape(code) for code in _UNESCAPES))
_SPECIALS = re.compile(r"[% \t\n\r|:]")


def escape(text: str) -> str:
    """Write `text` as a VW token may hold it: ``%``, blanks, ``|`` and ``:`` as ``%XX``.

    Examples
    --------
    >>> escape("50% off|a:b c")
    '50%25%20off%7Ca%3Ab%20c'
    """
    return text.translate(_ESCAPES)


def unescape(text: str) -> str:
    """Read back what :func:`escape` wrote.

    Examples
    --------
    >>> unescape("item%3A1")
    'item:1'
    """
    if "%" not in text:
        return text
    return _UNESCAPE_RE.sub(lambda match: _UNESCAPES[match.group(0)], text)


def needs_escaping(text: str) -> bool:
    """Whether :func:`escape` would change `text`.

    Examples
    --------
    >>> needs_escaping("item-1"), needs_escaping("item:1")
    (False, True)
    """
    return _SPECIALS.search(text) is not None


# -- the text -----------------------------------------------------------------------------


def label_text(cost: float, probability: float) -> str:
    """Return the label on the chosen action's line: ``0:<cost>:<probability>``.

    Examples
    --------
    >>> label_text(-1.0, 0.25)
    '0:-1.0:0.25'
    """
    return f"0:{cost}:{probability}"


def write_tokens(
    prefix: str, features: Features, append: Callable[[str], object], floats: list[float]
) -> int:
    """Append `features` as VW text tokens, unescaped; return how many are numeric.

    The tokens are `` |<prefix><namespace>`` for each namespace, then `` name=value``
    for a string and `` name:value`` for a non-zero number (a zero is left out, as VW
    leaves it out): each starts with one space and holds no other separator unless a
    name or value does, which :func:`unescaped` finds out. A float's value is written
    ``%s`` and appended to `floats`, for :func:`filled` to write them all at once.

    Examples
    --------
    >>> tokens, floats = [], []
    >>> write_tokens("c", {"u": {"x": 0.5, "n": 2, "z": 0.0, "t": "a"}}, tokens.append, floats)
    2
    >>> tokens, floats
    ([' |cu', ' x:%s', ' n:2', ' t=a'], [0.5])
    """
    numeric = 0
    for namespace, values in features.items():
        append(f" |{prefix}{namespace}")
        for name, value in values.items():
            if type(value) is float:
                if value:
                    append(f" {name}:%s")
                    floats.append(value)
                    numeric += 1
            elif isinstance(value, str):
                append(f" {name}={value}")
            elif value:
                append(f" {name}:{value}")
                numeric += 1
    return numeric


def filled(template: str, floats: list[float]) -> str | None:
    """`template` with its ``%s`` replaced by ``repr`` of `floats`; None if it holds another ``%``.

    Python's ``repr`` of a float is most of the cost of writing VW text; orjson writes
    the same shortest round-trip digits in the same notation (``0.1``, ``1e+16``) many
    times faster, for every float but those below 1e-4 (``0.00001`` for ``1e-05``) and
    the non-finite ones (``null``): those are written with ``repr``.

    Examples
    --------
    >>> filled(" |cu x:%s y:%s", [0.1, 1e16]), filled(" |cu 50%:%s", [0.5])
    (' |cu x:0.1 y:1e+16', None)
    """
    if template.count("%") != len(floats):  # a name or value holds a '%': to escape
        return None
    if not floats:
        return template
    written = orjson.dumps(floats).decode()
    if "e-" in written or "0.0000" in written or "null" in written:
        return template % tuple(map(repr, floats))
    return template % tuple(written[1:-1].split(","))


def unescaped(text: str, spaces: int, bars: int, colons: int, lines: int) -> bool:
    """Whether `text` holds exactly the separators it was written with, and nothing to escape.

    Ints and floats add no separator, so any name, value or other number that does
    changes a count, or adds a ``%``, tab or carriage return: the text is then not VW's.

    Examples
    --------
    >>> unescaped(" |cu x:1 t=a", 3, 1, 1, 0), unescaped(" |cu x:1 t=a:b", 3, 1, 1, 0)
    (True, False)
    """
    return (
        text.count(" ") == spaces
        and text.count("|") == bars
        and text.count(":") == colons
        and text.count("\n") == lines
        and "%" not in text
        and "\t" not in text
        and "\r" not in text
    )


def namespace_text(prefix: str, features: Features, action_id: str | None = None) -> str:
    """Write namespaces as `` |<prefix><name> feature ...``, then `` |id id=<action_id>``.

    The hot path: names and values are written as they are (:func:`write_tokens`,
    :func:`filled`), then the text is checked to hold exactly the separators written
    (:func:`unescaped`), so it is kept only when nothing needed escaping; otherwise it
    is written again, escaped. Either way the result is the escaped text. A zero-valued
    number writes nothing (VW would drop it).

    Raises
    ------
    InvalidFeaturesError
        If a number is NaN or infinite (once learned, VW cannot unlearn it).

    Examples
    --------
    >>> namespace_text("a", {"item": {"topic": "golf", "size": 2, "zero": 0}}, "x:1")
    ' |aitem topic=golf size:2 |id id=x%3A1'
    """
    tokens: list[str] = []
    floats: list[float] = []
    numeric = write_tokens(prefix, features, tokens.append, floats)
    spaces = len(tokens)
    bars = len(features)
    if action_id is not None:
        tokens.append(ID_TOKEN + action_id)
        spaces += 2
        bars += 1
    text = filled("".join(tokens), floats)
    if numeric and (text is None or "nan" in text or "inf" in text):
        _check_finite(features)
    if text is not None and unescaped(text, spaces, bars, numeric, 0):
        return text
    return _escaped_namespace_text(prefix, features, action_id)


def _check_finite(features: Features) -> None:
    """Refuse NaN and infinite values: once learned, VW cannot unlearn them."""
    for namespace, values in features.items():
        for name, value in values.items():
            if not isinstance(value, str) and not math.isfinite(value):
                msg = f"feature {namespace}.{name} must be finite, got {value!r}"
                raise InvalidFeaturesError(msg)


def _escaped_namespace_text(prefix: str, features: Features, action_id: str | None) -> str:
    parts: list[str] = []
    for namespace, values in features.items():
        tokens = [f" |{prefix}{escape(namespace)}"]
        for name, value in values.items():
            key = escape(name)
            if isinstance(value, str):
                tokens.append(f"{key}={escape(value)}")
            elif value:
                tokens.append(f"{key}:{value}")
        parts.append(" ".join(tokens))
    if action_id is not None:
        parts.append(ID_TOKEN + escape(action_id))
    return "".join(parts)


def shared_line(context: Context, prefix: str = CONTEXT_PREFIX) -> str:
    """Write the ``shared`` line of a multi-line example (the context's namespaces).

    Examples
    --------
    >>> shared_line({}), shared_line({"u": {"x": 1.5}})
    ('shared |', 'shared |cu x:1.5')
    """
    return shared_line_of(namespace_text(prefix, context))


def shared_line_of(text: str) -> str:
    """Write the ``shared`` line holding the context's namespaces, already written as `text`.

    Examples
    --------
    >>> shared_line_of(""), shared_line_of(" |cu x:1.5")
    ('shared |', 'shared |cu x:1.5')
    """
    # With no context features the shared line still needs its bar, or VW takes the
    # line "shared" for one more action.
    return "shared" + (text or " |")


def to_vw_lines(
    context: Context,
    actions: Sequence[Action],
    label: tuple[int, float, float] | None = None,
    *,
    context_prefix: str = CONTEXT_PREFIX,
    action_prefix: str = ACTION_PREFIX,
) -> list[str]:
    """Write one decision as VW multi-line ``cb_explore_adf`` text.

    Context namespaces are written as ``|c<name>`` and action namespaces as
    ``|a<name>``, so VW's one-letter interactions (``ca``) cross every context
    namespace with every action namespace. Each action also carries its id as the
    feature ``|id id=<id>`` (namespace ``id``, VW's letter ``i``), so actions without
    features are still told apart.

    Parameters
    ----------
    context, actions
        The decision.
    label
        ``(chosen, cost, probability)`` with a 0-based `chosen`, to write a learning
        example; ``None`` for a prediction.

    Examples
    --------
    >>> actions = [Action("x", {"item": {"topic": "golf"}})]
    >>> to_vw_lines({"user": {"age": 0.5}}, actions, (0, -1.0, 0.25))
    ['shared |cuser age:0.5', '0:-1.0:0.25 |aitem topic=golf |id id=x']
    """
    lines = [shared_line(context, context_prefix)]
    chosen = -1 if label is None else label[0]
    for index, action in enumerate(actions):
        # Every body starts with " |": the label takes the space, or it is dropped.
        body = namespace_text(action_prefix, action.features, action.id)
        if label is not None and index == chosen:
            lines.append(label_text(label[1], label[2]) + body)
        else:
            lines.append(body[1:])
    return lines


def to_ccb_lines(
    context: Context,
    actions: Sequence[Action],
    slots: Sequence[tuple[Features, Sequence[int] | None, tuple[int, float, float] | None]],
) -> list[str]:
    """Write one multi-slot decision as VW multi-line ``ccb_explore_adf`` text.

    The shared and action lines are :func:`to_vw_lines`' behind ``ccb shared`` and
    ``ccb action``; then one ``ccb slot`` line per slot, in slot order: its label
    ``<chosen>:<cost>:<probability>`` (VW numbers a slot's chosen action from 0, as the
    index of `actions`), the actions it may choose (``0,2``: every one when None), and
    its features under the namespace ``s<name>``.

    Parameters
    ----------
    context, actions
        The decision's shared features and every offered action.
    slots
        Per slot: its features, the indices of the actions it may choose (None: all),
        and ``(chosen, cost, probability)`` to learn, or None to predict.

    Examples
    --------
    >>> for line in to_ccb_lines(
    ...     {"u": {"x": 1.0}},
    ...     [Action("a"), Action("b")],
    ...     [({"_slot": {"pos": "top"}}, None, (1, -1.0, 0.5)), ({}, [0], None)],
    ... ):
    ...     print(line)
    ccb shared |cu x:1.0
    ccb action |id id=a
    ccb action |id id=b
    ccb slot 1:-1.0:0.5 |s_slot pos=top
    ccb slot 0 |
    """
    lines = to_vw_lines(context, actions)
    out = [f"ccb {lines[0]}", *(f"ccb action {line}" for line in lines[1:])]
    for features, include, label in slots:
        head = "ccb slot"
        if label is not None:
            head += f" {label[0]}:{label[1]}:{label[2]}"
        if include is not None:
            head += " " + ",".join(str(index) for index in include)
        out.append(head + (namespace_text(SLOT_PREFIX, features) or " |"))
    return out


def example_text(lines: list[str]) -> str:
    r"""Join example lines into the one text VW parses, exactly as ``pyvw`` does.

    Examples
    --------
    >>> example_text(["shared |cu x:1", "|id id=a", ""])
    'shared |cu x:1\n|id id=a'
    """
    return "\n".join(lines).replace("\r", "").strip()


class FeaturePieces:
    """:func:`namespace_text` of some features, cut so that each feature is one piece.

    The pieces joined are exactly the text :func:`namespace_text` writes: every
    namespace's header, then each of its features (a feature that writes nothing, a
    zero, is an empty piece), then the action id's namespace.

    Examples
    --------
    >>> from policies import FeatureRef
    >>> pieces = FeaturePieces("c", {"u": {"x": 1, "y": 2}})
    >>> pieces.without(FeatureRef(None, "u", "x"))
    ' |cu y:2'
    """

    def __init__(self, prefix: str, features: Features, action_id: str | None = None) -> None:
        self.parts: list[str] = []
        self.where: dict[tuple[str, str], int] = {}
        for namespace, values in features.items():
            header = namespace_text(prefix, {namespace: {}})
            self.parts.append(header)
            for name, value in values.items():
                self.where[namespace, name] = len(self.parts)
                self.parts.append(namespace_text(prefix, {namespace: {name: value}})[len(header) :])
        if action_id is not None:
            self.parts.append(namespace_text(prefix, {}, action_id))

    def without(self, feature: FeatureRef) -> str:
        """Return the text without `feature` (its namespace's header stays)."""
        index = self.where[feature.namespace, feature.name]
        return "".join(self.parts[:index]) + "".join(self.parts[index + 1 :])
