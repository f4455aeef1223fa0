"""Every package and public module declares a sorted ``__all__`` that it really exports."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

PACKAGES = ["bandit", "streams", "policies", "replay"]


def _public_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        module = importlib.import_module(package)
        names.extend(
            info.name
            for info in pkgutil.iter_modules(module.__path__, prefix=f"{package}.")
            if not info.name.rsplit(".", 1)[-1].startswith("_")
        )
    return names


@pytest.mark.parametrize("module_name", _public_modules())
def test_all_is_sorted_and_resolves(module_name: str) -> None:
    """``__all__`` is sorted, has no duplicates, and every name in it exists."""
    module = importlib.import_module(module_name)
    exported = list(module.__all__)
    assert exported == sorted(set(exported))
    missing = [name for name in exported if not hasattr(module, name)]
    assert missing == []
