"""Every policy, by name; and policy specs such as ``"vw-squarecb:gamma_scale=20"``."""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from policies.errors import ConfigurationError, UnknownPolicyError

if TYPE_CHECKING:
    from policies._base import Policy

__all__ = ["available", "format_spec", "make_policy", "parse_spec", "policy_class", "register"]

_CLASSES: dict[str, type[Policy]] = {}
_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {}


def register(cls: type[Policy], *presets: tuple[str, dict[str, Any]]) -> type[Policy]:
    """Register a policy class under its ``name``, with named parameter presets."""
    _CLASSES[cls.name] = cls
    _PRESETS[cls.name] = (cls.name, {})
    for preset, params in presets:
        _PRESETS[preset] = (cls.name, dict(params))
    return cls


def available() -> list[str]:
    """Names :func:`make_policy` accepts, sorted."""
    _load_builtins()
    return sorted(_PRESETS)


def policy_class(name: str) -> type[Policy]:
    """Return the class registered under `name` (a class name, not a preset)."""
    _load_builtins()
    try:
        return _CLASSES[name]
    except KeyError:
        msg = f"no policy class named {name!r}; known: {sorted(_CLASSES)}"
        raise UnknownPolicyError(msg) from None


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    r"""Split ``"name:key=value,key=value"`` into the name and typed parameters.

    Values are read as JSON where they parse (numbers, booleans, lists), else as strings.

    Examples
    --------
    >>> parse_spec("vw-epsilon:epsilon=0.2,interactions=[\"ca\"]")
    ('vw-epsilon', {'epsilon': 0.2, 'interactions': ['ca']})
    """
    name, _, rest = spec.partition(":")
    params: dict[str, Any] = {}
    for item in _split_top_level(rest):
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            msg = f"policy spec {spec!r}: parameter {item!r} must look like key=value"
            raise ConfigurationError(msg)
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return name.strip(), params


def format_spec(name: str, params: Mapping[str, Any]) -> str:
    r"""Write the spec :func:`parse_spec` reads back as `name` and `params` (values as JSON).

    Examples
    --------
    >>> spec = format_spec("vw", {"cb_type": "ips", "interactions": ["::"], "l1": 1e-07})
    >>> spec
    'vw:cb_type="ips",interactions=["::"],l1=1e-07'
    >>> parse_spec(spec)
    ('vw', {'cb_type': 'ips', 'interactions': ['::'], 'l1': 1e-07})
    """
    items = [f"{key}={json.dumps(value, separators=(',', ':'))}" for key, value in params.items()]
    return f"{name}:{','.join(items)}" if items else name


def make_policy(spec: str, **overrides: Any) -> Policy:
    """Build a fresh policy from a preset name or spec, with keyword overrides.

    Examples
    --------
    >>> make_policy("uniform").name
    'uniform'
    >>> make_policy("no-such-policy")
    Traceback (most recent call last):
    ...
    policies.errors.UnknownPolicyError: no policy named 'no-such-policy'; known: ...
    """
    _load_builtins()
    name, params = parse_spec(spec)
    try:
        class_name, preset = _PRESETS[name]
    except KeyError:
        msg = f"no policy named {name!r}; known: {', '.join(sorted(_PRESETS))}"
        raise UnknownPolicyError(msg) from None
    cls = _CLASSES[class_name]
    try:
        return cls(**{**preset, **params, **overrides})
    except TypeError as exc:
        msg = f"policy {name!r}: {exc}"
        raise ConfigurationError(msg) from exc


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if text[start:].strip():
        items.append(text[start:])
    return [item for item in items if item.strip()]


_BUILTINS = ("policies.baselines", "policies.river", "policies.vw", "policies.vwccb")
"""The modules of the built-in policies, imported by name the first time a policy is looked up.

Each registers its classes with :func:`register` when imported, so the registry never
imports a policy module by statement: the policies stand on the registry, not the reverse.
"""


def _load_builtins() -> None:
    """Import the modules that register the built-in policies."""
    for module in _BUILTINS:
        importlib.import_module(module)
