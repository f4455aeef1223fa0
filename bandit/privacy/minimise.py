"""Data minimisation: each policy sees only the features it declared, and never identifiers.

A policy's live settings may declare a :class:`FeatureSchema`: the context and action
features it uses, by namespace and name, each with a type and, for numbers, a range
(for strings, optionally the allowed values). On the rank path (:class:`Minimiser`):

- a declared feature that breaks its declaration is refused: the request is answered
  422 naming the feature and the rule;
- an undeclared feature is dropped and counted (``undeclared="drop"``, the default) or
  refused (``undeclared="reject"``);
- whatever the schema, an identifier-like feature is refused as a model feature: a
  name such as ``user_id``, ``email`` or ``ip_address``, or a string value that is an
  email address, an IP address, a UUID or a long run of digits (a phone, card or
  account number). Personalise on what people do, not on who they are. A request to
  the Personalizer routes has it dropped and counted instead
  (``identifiers="drop"``, ``settings.privacy.personalizer_identifiers``): its clients
  sent such features to a service that took them.

Features kept by the service itself (session and device features from behaviour
events) are never the caller's fault: what the schema or the identifier rule would
refuse is dropped and counted instead. The decision logs the features the policy saw,
after minimisation (DESIGN.md contract 5), so replay sees the same.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from bandit.errors import FeatureRefusedError
from bandit.wire.features import FeatureSchema, FeatureSpec
from policies import Action

__all__ = [
    "Dropped",
    "FeatureRefusedError",
    "FeatureSchema",
    "FeatureSpec",
    "Minimiser",
    "identifier_reason",
]

Features = dict[str, dict[str, Any]]
FeaturesIn = Mapping[str, Mapping[str, Any]]

_IDENTIFIER_NAMES = frozenset(
    {
        "userid", "uid", "username", "login", "email", "emailaddress", "mail", "ip",
        "ipaddress", "ipaddr", "clientip", "remoteaddr", "phone", "phonenumber",
        "mobilenumber", "ssn", "socialsecuritynumber", "passport", "passportnumber",
        "creditcard", "cardnumber", "iban", "accountnumber", "accountid", "customerid",
        "deviceid", "sessionid", "cookieid", "idfa", "gaid", "advertisingid", "macaddress",
    }
)  # fmt: skip
"""Feature names (lower case, letters and digits only) that name a person or device."""
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_IPV4 = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}")
_UUID = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)
_DIGITS = re.compile(r"\+?[\d\s().-]+")
_LONG_DIGITS = 9
_UUID_HEX = 32
_NOT_NAME = re.compile(r"[^a-z0-9]")
_CACHE_SIZE = 65_536


def identifier_reason(name: str, value: object) -> str | None:
    """Say why a feature is identifier-like, or return None when it is not.

    Examples
    --------
    >>> identifier_reason("email", "x"), identifier_reason("topic", "golf")
    ('its name says it identifies someone (email)', None)
    >>> identifier_reason("contact", "ann@example.com")
    'its value is an email address'
    >>> identifier_reason("origin", "2001:db8::1"), identifier_reason("score", 0.5)
    ('its value is an IP address', None)
    """
    reason = _name_reason(name)
    if reason is not None or type(value) is not str:
        return reason
    return _value_reason(value)


def _name_reason(name: str) -> str | None:
    if _NOT_NAME.sub("", name.lower()) in _IDENTIFIER_NAMES:
        return f"its name says it identifies someone ({name})"
    return None


def _value_reason(value: str) -> str | None:
    if "@" in value and _EMAIL.fullmatch(value):
        return "its value is an email address"
    if ":" in value or _IPV4.fullmatch(value):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            pass
        else:
            return "its value is an IP address"
    if len(value) >= _UUID_HEX and _UUID.fullmatch(value):
        return "its value is a UUID"
    if _DIGITS.fullmatch(value) and sum(c.isdigit() for c in value) >= _LONG_DIGITS:
        return f"its value is a run of {_LONG_DIGITS} or more digits (a phone or account number)"
    return None


@dataclass(frozen=True, slots=True)
class Dropped:
    """How many features were dropped, and why."""

    undeclared: int = 0
    identifier: int = 0
    invalid: int = 0

    def __add__(self, other: Dropped) -> Dropped:
        return Dropped(
            self.undeclared + other.undeclared,
            self.identifier + other.identifier,
            self.invalid + other.invalid,
        )

    def __bool__(self) -> bool:
        return bool(self.undeclared or self.identifier or self.invalid)


_NONE_DROPPED = Dropped()


class Minimiser:
    """Apply one policy's :class:`FeatureSchema` (or none) to what its policy is to see.

    Parameters
    ----------
    schema
        The policy's declared features; None declares nothing, and then only the
        identifier rule applies.

    Examples
    --------
    >>> m = Minimiser(FeatureSchema(context={"user": {"tier": {"type": "string"}}}))
    >>> context, actions, dropped = m.apply({"user": {"tier": "gold", "age": 31.0}}, [])
    >>> context, dropped.undeclared
    ({'user': {'tier': 'gold'}}, 1)
    >>> try:
    ...     Minimiser(None).apply({"user": {"contact": "ann@example.com"}}, [])
    ... except FeatureRefusedError as error:
    ...     print(error.location, error.kind)
    ['context', 'user', 'contact'] identifier
    """

    def __init__(self, schema: FeatureSchema | None) -> None:
        self.schema = schema
        self._fine_names: set[str] = set()  # names found not identifying
        self._fine_values: set[str] = set()  # string values found not identifying
        self._actions: dict[int, tuple[Action, Action, Dropped]] = {}
        self._dropping: dict[int, tuple[Action, Action, Dropped]] = {}  # identifiers dropped

    def apply(
        self,
        context: FeaturesIn,
        actions: Sequence[Action],
        *,
        ids: Callable[[], Mapping[str, int]] | None = None,
        identifiers: Literal["refuse", "drop"] = "refuse",
    ) -> tuple[Features, list[Action], Dropped]:
        """Return the context and actions the policy may see, and what was dropped.

        Parameters
        ----------
        context, actions
            What the policy would see (``RankRequest.policy_inputs()``).
        ids
            Gives each action id's index in the request, to name refused action
            features (called for actions not seen before only).
        identifiers
            ``"refuse"`` an identifier-like feature (raise), or ``"drop"`` it and count it.

        Raises
        ------
        FeatureRefusedError
            For an identifier-like feature, a declared one breaking its declaration,
            or (``undeclared="reject"``) an undeclared one.
        """
        declared = None if self.schema is None else self.schema.context
        lenient = identifiers == "drop"
        kept_context, dropped = self._features(
            context, declared, ("context",), drop=False, drop_identifiers=lenient
        )
        kept_actions = []
        cache = self._dropping if lenient else self._actions
        for action in actions:
            entry = cache.get(id(action))
            if entry is None or entry[0] is not action:  # (the entry keeps `action` alive)
                index = action.id if ids is None else ids().get(action.id, action.id)
                declared = None if self.schema is None else self.schema.actions
                where = ("actions", index, "features")
                features, lost = self._features(
                    action.features, declared, where, drop=False, drop_identifiers=lenient
                )
                kept = (
                    action
                    if not lost and features == action.features
                    else Action(action.id, features)
                )
                if len(cache) >= _CACHE_SIZE:
                    cache.clear()
                entry = cache[id(action)] = (action, kept, lost)
            kept_actions.append(entry[1])
            dropped = dropped + entry[2] if entry[2] else dropped
        return kept_context, kept_actions, dropped

    def slot(
        self,
        features: FeaturesIn,
        index: int,
        *,
        identifiers: Literal["refuse", "drop"] = "refuse",
    ) -> tuple[Features, Dropped]:
        """Return what the policy may see of slot `index`'s features, as of the context's.

        A multi-slot rank's slot features (:class:`bandit.wire.schemas.RankSlot`) obey
        the rules of the context's (declared namespaces, the identifier rule); a refused
        one is located at ``slots[index].features``.

        Raises
        ------
        FeatureRefusedError
            As :meth:`apply`.
        """
        declared = None if self.schema is None else self.schema.context
        return self._features(
            features,
            declared,
            ("slots", index, "features"),
            drop=False,
            drop_identifiers=identifiers == "drop",
        )

    def stored(self, features: FeaturesIn) -> tuple[Features, Dropped]:
        """Filter features the service kept itself (session, device): drop, never refuse."""
        declared = None if self.schema is None else self.schema.context
        return self._features(features, declared, ("context",), drop=True)

    def _features(
        self,
        features: FeaturesIn,
        declared: dict[str, dict[str, FeatureSpec]] | None,
        where: tuple[str | int, ...],
        *,
        drop: bool,
        drop_identifiers: bool = False,
    ) -> tuple[Features, Dropped]:
        """Check every feature; return `features` itself when nothing is dropped."""
        lost: dict[str, set[str]] = {}
        counts = {"undeclared": 0, "identifier": 0, "invalid": 0}
        reject = self.schema is not None and self.schema.undeclared == "reject"
        for namespace, values in features.items():
            specs = None if declared is None else declared.get(namespace, {})
            for name, value in values.items():
                verdict = self._judge(name, value, specs)
                if verdict is None:
                    continue
                kind, rule = verdict
                if (
                    drop
                    or (kind == "undeclared" and not reject)
                    or (kind == "identifier" and drop_identifiers)
                ):
                    counts[kind] += 1
                    lost.setdefault(namespace, set()).add(name)
                    continue
                raise FeatureRefusedError((*where, namespace, name), rule, kind)
        if not lost:
            return cast(Features, features), _NONE_DROPPED
        kept: Features = {}
        for namespace, values in features.items():
            gone = lost.get(namespace)
            if gone is None:
                kept[namespace] = dict(values)
            elif len(gone) < len(values):
                kept[namespace] = {n: v for n, v in values.items() if n not in gone}
        return kept, Dropped(**counts)

    def _judge(
        self, name: str, value: object, specs: dict[str, FeatureSpec] | None
    ) -> tuple[str, str] | None:
        """Return (kind, rule) when the policy may not see the feature, else None."""
        if name not in self._fine_names:
            reason = _name_reason(name)
            if reason is not None:
                return "identifier", f"identifier-like feature refused as a model feature: {reason}"
            if len(self._fine_names) >= _CACHE_SIZE:
                self._fine_names.clear()
            self._fine_names.add(name)
        if type(value) is str and value not in self._fine_values:
            reason = _value_reason(value)
            if reason is not None:
                return "identifier", f"identifier-like feature refused as a model feature: {reason}"
            if len(self._fine_values) >= _CACHE_SIZE:
                self._fine_values.clear()
            self._fine_values.add(value)
        if specs is None:  # nothing declared
            return None
        spec = specs.get(name)
        if spec is None:
            return "undeclared", "undeclared feature: not in the policy's feature schema"
        broken = spec.broken(value)
        return (
            None if broken is None else ("invalid", f"breaks the policy's feature schema: {broken}")
        )
