"""Policy specs and the registry."""

from __future__ import annotations

import pytest

from bandit.errors import ConfigurationError, UnknownPolicyError
from policies import make_policy, policy_class
from policies.registry import parse_spec
from policies.vw import VWPolicy


def test_spec_parameters_are_typed() -> None:
    """Numbers, booleans and lists in a spec arrive typed; other text stays a string."""
    assert parse_spec('vw:epsilon=0.3,bag=4,interactions=["ca","cc"],exploration=bag') == (
        "vw",
        {"epsilon": 0.3, "bag": 4, "interactions": ["ca", "cc"], "exploration": "bag"},
    )


def test_a_preset_and_its_overrides_build_the_policy() -> None:
    """A preset name fixes the exploration; spec parameters and keywords override the rest."""
    policy = make_policy("vw-bag:bag=4", epsilon=0.2)
    assert isinstance(policy, VWPolicy)
    assert (policy.exploration, policy.bag, policy.epsilon) == ("bag", 4, 0.2)


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("nope", UnknownPolicyError, "no policy named 'nope'; known: .*vw-squarecb"),
        ("vw:epsilon", ConfigurationError, "parameter 'epsilon' must look like key=value"),
        ("uniform:colour=3", ConfigurationError, "policy 'uniform': .*colour"),
    ],
)
def test_bad_specs_are_refused(spec: str, error: type[Exception], match: str) -> None:
    """Unknown names, malformed parameters and unknown arguments are named."""
    with pytest.raises(error, match=match):
        make_policy(spec)


def test_policy_class_refuses_preset_names() -> None:
    """Snapshots name classes, not presets; an unknown class name is an error."""
    assert policy_class("vw") is VWPolicy
    with pytest.raises(UnknownPolicyError, match="no policy class named 'vw-epsilon'"):
        policy_class("vw-epsilon")
