"""A served policy's model replaced: by a fresh one, a VW model file, or a kept version.

A reset serves a fresh model, an import a VW model file, a rollback a version the policy
kept.

A VW model file comes from outside (trained by ``vw`` on a decision log, or exported by
another service): it is loaded and checked in a child process
(``python -m bandit.service.modelfile``), never in the API process, so a file VW cannot
read, or one that makes VW crash, costs a refusal and not the service. The child loads
it with the served policy's own options (:meth:`policies.vw.VWPolicy.load_model_file`:
VW must accept it, every learned number must be finite), applies the policy's live
settings, and writes back the snapshot the service then saves as the next model
version, as the learner saves one (the learner learns on from it).

A kept version (a rollback) is the service's own snapshot: it is restored in the API
process, as every served model is, checked and given the live settings
(:func:`rolled_back_snapshot`).

The child reads its standard input: one line of the policy's settings
(:class:`~bandit.wire.schemas.PolicySettings` JSON), then the model file's bytes; it
writes the snapshot to its standard output, or exits 2 with the reason on its standard
error.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from bandit.errors import ConfigurationError, InvalidModelError, ModelFileError, SnapshotError
from bandit.service.engine import configured
from bandit.wire.schemas import PolicySettings
from policies import Policy, make_policy
from policies.vw import VWPolicy

__all__ = ["ModelFileError", "fresh_snapshot", "imported_snapshot", "main", "rolled_back_snapshot"]

CHECK_SECONDS = 60.0
"""The longest a model file's check may take before it is refused."""


def fresh_snapshot(settings: PolicySettings) -> bytes:
    """Return the snapshot of a new model of `settings`' spec: what a reset serves.

    Examples
    --------
    >>> from policies import Policy
    >>> settings = PolicySettings(spec="vw-epsilon", exploration={"epsilon": 0.2})
    >>> restored = Policy.restore(fresh_snapshot(settings))
    >>> restored.n_learned, restored.epsilon
    (0, 0.2)
    """
    return configured(make_policy(settings.spec), settings).snapshot()


def rolled_back_snapshot(settings: PolicySettings, snapshot: bytes) -> bytes:
    """Return the snapshot that serves a kept version again, with the live `settings`.

    The model is what the version learned; exploration and floor are today's.

    Raises
    ------
    ModelFileError
        If the kept snapshot does not restore, its model is not finite, it is not a
        model of the served spec's policy or learned with other options than the spec's
        (those a live change cannot make), or it cannot take the live settings.

    Examples
    --------
    >>> settings = PolicySettings(spec="vw-epsilon", exploration={"epsilon": 0.3})
    >>> kept = make_policy("vw-epsilon:epsilon=0.1").snapshot()
    >>> Policy.restore(rolled_back_snapshot(settings, kept)).epsilon
    0.3
    """
    try:
        policy = Policy.restore(snapshot)
        policy.check_model()
        served = make_policy(settings.spec)
        if type(policy) is not type(served):
            msg = (
                f"it is a {type(policy).__name__} model, and the policy serves spec "
                f"{settings.spec!r} ({type(served).__name__})"
            )
            raise ConfigurationError(msg)
        kept, now = policy.params(), served.params()
        frozen = sorted(set(now) - served.tunable_params() - {"floor"})
        differ = [
            f"{key}: {kept.get(key)!r}, now {now[key]!r}"
            for key in frozen
            if kept.get(key) != now[key]
        ]
        if differ:  # (a learning policy changed since: the model's options are not the spec's)
            msg = (
                f"it learned with options the served spec {settings.spec!r} does not have "
                f"({'; '.join(differ)}): set those options back first"
            )
            raise ConfigurationError(msg)
        return configured(policy, settings).snapshot()
    except (ConfigurationError, InvalidModelError, SnapshotError, TypeError, ValueError) as exc:
        raise ModelFileError(str(exc)) from None


def _checked_snapshot(settings: PolicySettings, model: bytes) -> bytes:
    """In the child: the snapshot of `settings`' policy learning on from `model`."""
    policy = make_policy(settings.spec)
    if not isinstance(policy, VWPolicy):
        msg = f"the served spec {settings.spec!r} is not a VW policy: it takes no VW model file"
        raise ConfigurationError(msg)
    policy.load_model_file(model)
    return configured(policy, settings).snapshot()


async def imported_snapshot(
    settings: PolicySettings, model: bytes, timeout: float = CHECK_SECONDS
) -> bytes:
    """Check `model` in a child process; return the snapshot to save.

    Raises
    ------
    ModelFileError
        If the served policy cannot learn on from `model`: VW does not load it with the
        policy's options, a learned number is not finite, the policy is not VW's, the
        check crashed or took longer than `timeout` seconds.
    """
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    data = settings.model_dump_json().encode() + b"\n" + model
    try:
        out, err = await asyncio.wait_for(child.communicate(data), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
        msg = f"checking the model file took longer than {timeout:g} s"
        raise ModelFileError(msg) from None
    if child.returncode == 0:
        return out
    reason = err.decode(errors="replace").strip().splitlines()
    if child.returncode == 2 and reason:
        raise ModelFileError(reason[-1])
    msg = f"VW could not read the model file (its check ended with code {child.returncode})"
    raise ModelFileError(msg)


def main() -> int:
    """Run the check: settings and model file on stdin, snapshot on stdout (exit 2: refused)."""
    data = sys.stdin.buffer.read()
    head, _, model = data.partition(b"\n")
    try:
        settings = PolicySettings.model_validate_json(head)
        snapshot = _checked_snapshot(settings, model)
    except (ConfigurationError, InvalidModelError, SnapshotError, ValueError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    sys.stdout.buffer.write(snapshot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
