"""One exception tree: every error the four packages define is a StreambanditError, drawn once."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import bandit.client
import bandit.errors
import policies.errors
from bandit.errors import StreambanditError

PACKAGES = ["policies", "replay", "bandit", "streams"]
# Exceptions used as control flow inside one module, never raised out of it: not errors.
CONTROL_FLOW = frozenset({"replay.readers._Skip", "bandit.ops.warmstart.logs._Skipped"})
# Where the tree lives: the ground's errors and the service's (which re-exports them).
ERROR_MODULES = frozenset({"policies.errors", "bandit.errors"})


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        module = importlib.import_module(package)
        names.extend(
            info.name
            for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}.")
            if info.name.rsplit(".", 1)[-1] != "__main__"  # runs the CLI when imported
        )
    return names


def _classes(owner: object, module: str) -> list[type]:
    """Classes defined in `module`: at its top level and nested in its classes."""
    found = []
    for _, value in inspect.getmembers(owner, inspect.isclass):
        if value.__module__ == module and value.__qualname__.startswith(
            getattr(owner, "__qualname__", "")
        ):
            found.append(value)
            found.extend(_classes(value, module))
    return found


def _exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for cls in _classes(module, name):
            if issubclass(cls, BaseException):
                found[f"{name}.{cls.__qualname__}"] = cls
    return found


EXCEPTIONS = _exceptions()


def test_the_walk_finds_the_errors() -> None:
    """The walk over the packages sees the tree itself and the exempt control flow."""
    assert "bandit.errors.ClientError" in EXCEPTIONS
    assert "policies.errors.StreambanditError" in EXCEPTIONS
    assert EXCEPTIONS.keys() >= CONTROL_FLOW


@pytest.mark.parametrize("name", sorted(EXCEPTIONS.keys() - CONTROL_FLOW))
def test_every_exception_is_in_the_tree(name: str) -> None:
    """Every exception class that policies, replay, bandit or streams defines is in the tree."""
    assert issubclass(EXCEPTIONS[name], StreambanditError)


def test_public_errors_live_in_the_error_modules() -> None:
    """Public exception classes are defined in policies.errors or bandit.errors, nowhere else."""
    elsewhere = sorted(
        name
        for name, cls in EXCEPTIONS.items()
        if cls.__module__ not in ERROR_MODULES and not cls.__name__.startswith("_")
    )
    assert elsewhere == []


def test_the_drawing_names_every_error() -> None:
    """The tree drawn in bandit.errors' docstring names every class it exports."""
    doc = bandit.errors.__doc__ or ""
    exported = [getattr(bandit.errors, name) for name in bandit.errors.__all__]
    classes = [value for value in exported if isinstance(value, type)]
    assert {cls.__name__ for cls in classes} == set(bandit.errors.__all__)
    drawn = set(re.findall(r"\b([A-Za-z]+Error)\b", doc))
    missing = [cls.__name__ for cls in classes if cls.__name__ not in drawn]
    assert missing == []
    assert set(policies.errors.__all__) <= set(bandit.errors.__all__)


def test_the_client_re_exports_its_branch() -> None:
    """bandit.client's error names are the tree's classes, not copies."""
    for name in bandit.client.__all__:
        value = getattr(bandit.client, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert value is getattr(bandit.errors, name)
            assert issubclass(value, bandit.errors.ClientError)
