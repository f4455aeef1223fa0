"""Rewriting the options frozen into a saved VW model's header."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from vowpalwabbit import pyvw

from bandit.errors import ConfigurationError, SnapshotError
from policies._vwmodel import read_model_id, read_options, rewrite_model_id, rewrite_options

BASE = "--cb_explore_adf --quiet --no_stdin -q ca --random_seed 1"
SQUARECB = f"{BASE} --squarecb"
COVER = f"{BASE} --cover 3"
N_SEGMENTS = 3


def _lines(segment: int, label: tuple[int, float] | None = None) -> list[str]:
    lines = [f"shared |c u{segment}", "|a id=a", "|a id=b", "|a id=c"]
    if label is not None:
        chosen, cost = label
        lines[1 + chosen] = f"0:{cost}:{1 / N_SEGMENTS} {lines[1 + chosen]}"
    return lines


def _train(vw: pyvw.Workspace, steps: int, seed: int) -> None:
    """Log uniformly chosen actions; in segment u the best action is u."""
    rng = random.Random(seed)
    for _ in range(steps):
        segment, chosen = rng.randrange(N_SEGMENTS), rng.randrange(N_SEGMENTS)
        vw.learn(_lines(segment, (chosen, -1.0 if chosen == segment else 0.0)))


def _pmfs(vw: pyvw.Workspace) -> list[list[float]]:
    return [[float(p) for p in vw.predict(_lines(segment))] for segment in range(N_SEGMENTS)]


def _flat(pmfs: list[list[float]]) -> list[float]:
    return [p for pmf in pmfs for p in pmf]


def _greedy(vw: pyvw.Workspace) -> list[int]:
    return [max(range(len(pmf)), key=pmf.__getitem__) for pmf in _pmfs(vw)]


def _trained(arguments: str, tmp_path: Path, steps: int = 200) -> bytes:
    vw = pyvw.Workspace(arguments)
    _train(vw, steps, seed=0)
    path = tmp_path / "trained.vw"
    vw.save(str(path))
    vw.finish()
    return path.read_bytes()


def _load(model: bytes, tmp_path: Path, extra: str = "") -> pyvw.Workspace:
    path = tmp_path / f"model-{len(list(tmp_path.iterdir()))}.vw"
    path.write_bytes(model)
    return pyvw.Workspace(f"--quiet -i {path} {extra}")


@pytest.fixture
def squarecb(tmp_path: Path) -> bytes:
    return _trained(f"{SQUARECB} --gamma_scale 10", tmp_path)


@pytest.fixture
def cover(tmp_path: Path) -> bytes:
    return _trained(f"{COVER} --psi 1", tmp_path)


# -- SquareCB --gamma_scale ---------------------------------------------------------


def test_rewritten_squarecb_model_loads_with_new_gamma_scale(
    squarecb: bytes, tmp_path: Path
) -> None:
    """A squarecb model rewritten to gamma_scale 100 loads and reports 100."""
    vw = _load(rewrite_options(squarecb, {"gamma_scale": "100"}), tmp_path)
    arguments = f"{vw.get_arguments()} "
    assert "--gamma_scale 100 " in arguments
    assert "--gamma_scale 10 " not in arguments


def test_rewritten_squarecb_model_keeps_learned_weights(squarecb: bytes, tmp_path: Path) -> None:
    """The rewritten model keeps the original's greedy actions, unlike a fresh model."""
    rewritten = _load(rewrite_options(squarecb, {"gamma_scale": "100"}), tmp_path)
    original = _load(squarecb, tmp_path)
    fresh = pyvw.Workspace(f"{SQUARECB} --gamma_scale 100")
    assert _greedy(rewritten) == _greedy(original) == list(range(N_SEGMENTS))
    assert _flat(_pmfs(rewritten)) != pytest.approx(_flat(_pmfs(fresh)), abs=1e-3)


def test_larger_gamma_scale_makes_squarecb_greedier(squarecb: bytes, tmp_path: Path) -> None:
    """Raising gamma_scale raises the greedy action's probability in every segment."""
    original = _pmfs(_load(squarecb, tmp_path))
    rewritten = _pmfs(_load(rewrite_options(squarecb, {"gamma_scale": "100"}), tmp_path))
    for segment in range(N_SEGMENTS):
        assert rewritten[segment][segment] > original[segment][segment] + 0.01


def test_rewritten_squarecb_explores_like_a_reload_with_the_flag(tmp_path: Path) -> None:
    """Rewriting gamma_scale equals reloading with --gamma_scale, now and after learning."""
    # VW accepts --gamma_scale on reload only when the model does not store it, so a
    # model trained on the default (10) is the reference for one that stores 10.
    reference = _load(_trained(SQUARECB, tmp_path), tmp_path, "--gamma_scale 100")
    model = _trained(f"{SQUARECB} --gamma_scale 10", tmp_path)
    rewritten = _load(rewrite_options(model, {"gamma_scale": "100"}), tmp_path)
    assert _pmfs(rewritten) == _pmfs(reference)
    _train(reference, 100, seed=7)
    _train(rewritten, 100, seed=7)
    assert _pmfs(rewritten) == _pmfs(reference)


def test_rewrite_gives_the_bytes_vw_saves_for_the_new_value(tmp_path: Path) -> None:
    """An untrained model rewritten to gamma_scale 100 is the file VW saves when built with 100."""
    # Untrained, so the learners' running statistics (which depend on the predicted
    # distributions, hence on gamma) are equal too and only the header can differ.
    saved_with_100 = _trained(f"{SQUARECB} --gamma_scale 100", tmp_path, steps=0)
    saved_with_10 = _trained(f"{SQUARECB} --gamma_scale 10", tmp_path, steps=0)
    assert saved_with_10 != saved_with_100
    assert rewrite_options(saved_with_10, {"gamma_scale": "100"}) == saved_with_100


def test_rewrite_to_the_stored_values_returns_the_same_bytes(squarecb: bytes) -> None:
    """Rewriting options to the values already stored changes no byte."""
    assert rewrite_options(squarecb, {"gamma_scale": "10"}) == squarecb
    assert rewrite_options(squarecb, {}) == squarecb


def test_several_options_change_at_once(tmp_path: Path) -> None:
    """Both gamma_scale and gamma_exponent change in one rewrite."""
    model = _trained(f"{SQUARECB} --gamma_scale 10 --gamma_exponent 0.5", tmp_path)
    changed = rewrite_options(model, {"gamma_scale": "50", "gamma_exponent": "0.25"})
    arguments = _load(changed, tmp_path).get_arguments()
    assert "--gamma_scale 50" in arguments
    assert "--gamma_exponent 0.25" in arguments


# -- cover --psi ---------------------------------------------------------------------


def test_rewritten_cover_model_loads_with_new_psi(cover: bytes, tmp_path: Path) -> None:
    """A cover model rewritten to psi 100 loads and reports 100."""
    vw = _load(rewrite_options(cover, {"psi": "100"}), tmp_path)
    assert "--psi 100 " in f"{vw.get_arguments()} "


def test_rewritten_cover_model_keeps_learned_policies(cover: bytes, tmp_path: Path) -> None:
    """psi acts when learning, so the rewritten model predicts as the original, not as fresh."""
    rewritten = _pmfs(_load(rewrite_options(cover, {"psi": "100"}), tmp_path))
    assert rewritten == _pmfs(_load(cover, tmp_path))
    fresh = _pmfs(pyvw.Workspace(f"{COVER} --psi 100"))
    assert _flat(rewritten) != pytest.approx(_flat(fresh), abs=1e-3)


def test_rewritten_cover_explores_like_a_reload_with_the_flag(tmp_path: Path) -> None:
    """After more learning, a psi rewrite equals a reload with --psi and differs from psi 1."""
    reference = _load(_trained(COVER, tmp_path), tmp_path, "--psi 100")
    model = _trained(f"{COVER} --psi 1", tmp_path)
    rewritten = _load(rewrite_options(model, {"psi": "100"}), tmp_path)
    unchanged = _load(model, tmp_path)
    for vw in (reference, rewritten, unchanged):
        _train(vw, 100, seed=7)
    assert _pmfs(rewritten) == _pmfs(reference)
    assert _flat(_pmfs(rewritten)) != pytest.approx(_flat(_pmfs(unchanged)), abs=1e-3)


# -- reading -------------------------------------------------------------------------


def test_read_options_returns_the_stored_text(squarecb: bytes) -> None:
    """read_options returns the header's options text as VW wrote it."""
    options = read_options(squarecb)
    assert options.startswith(" --")
    assert "--gamma_scale 10 " in options
    assert "--squarecb" in options


# -- refusals ------------------------------------------------------------------------


def test_corrupt_model_raises_snapshot_error(squarecb: bytes) -> None:
    """A model whose options text was altered without its checksum is refused."""
    corrupt = squarecb.replace(b"--gamma_scale 10", b"--gamma_scale 19", 1)
    assert corrupt != squarecb
    with pytest.raises(SnapshotError, match="checksum"):
        rewrite_options(corrupt, {"gamma_scale": "100"})


def test_corrupt_checksum_raises_snapshot_error(squarecb: bytes) -> None:
    """A model whose stored checksum was altered is refused."""
    options_end = squarecb.index(b"\0", squarecb.index(b" --"))
    at = options_end + 1 + 4  # past the NUL and the checksum's length field
    corrupt = squarecb[:at] + bytes([squarecb[at] ^ 0xFF]) + squarecb[at + 1 :]
    with pytest.raises(SnapshotError, match="checksum"):
        rewrite_options(corrupt, {"gamma_scale": "100"})


@pytest.mark.parametrize("cut", [0, 3, 11, 40, -9, -5, -1])
def test_truncated_header_raises_snapshot_error(squarecb: bytes, cut: int) -> None:
    """A model cut off inside its header (at `cut`, from the header's end if < 0) is refused."""
    header_end = squarecb.index(b"\0", squarecb.index(b" --")) + 9  # NUL, checksum field
    with pytest.raises(SnapshotError):
        rewrite_options(squarecb[: cut if cut >= 0 else header_end + cut], {"gamma_scale": "1"})


@pytest.mark.parametrize("data", [b"", b"not a model", b"\x07\x00\x00\x00garbage" + b"\0" * 40])
def test_bytes_that_are_not_a_model_raise_snapshot_error(data: bytes) -> None:
    """Bytes that are not a VW model are refused."""
    with pytest.raises(SnapshotError):
        rewrite_options(data, {"gamma_scale": "100"})


def test_model_older_than_the_chained_checksum_raises_snapshot_error(squarecb: bytes) -> None:
    """A header claiming a version before 8.0.3 is refused, naming the version."""
    assert squarecb[4:11] == b"9.11.9\0"
    old = squarecb[:4] + b"8.0.02\0" + squarecb[11:]
    with pytest.raises(SnapshotError, match=r"8\.0\.02"):
        rewrite_options(old, {"gamma_scale": "100"})


def test_absent_option_raises_snapshot_error(squarecb: bytes) -> None:
    """Changing an option the model does not store is refused, naming it."""
    with pytest.raises(SnapshotError, match="--psi"):
        rewrite_options(squarecb, {"psi": "2"})


def test_repeated_option_raises_snapshot_error(tmp_path: Path) -> None:
    """Changing an option stored more than once is refused, naming it."""
    arguments = "--cb_explore_adf --squarecb --quiet --interactions ca --interactions c_"
    model = _trained(arguments, tmp_path, steps=1)
    assert read_options(model).count("--interactions ") == 2
    with pytest.raises(SnapshotError, match="--interactions"):
        rewrite_options(model, {"interactions": "cc"})


def test_switch_option_raises_snapshot_error(squarecb: bytes) -> None:
    """Giving a value to an option stored as a bare switch is refused."""
    with pytest.raises(SnapshotError, match="switch"):
        rewrite_options(squarecb, {"squarecb": "1"})


@pytest.mark.parametrize(
    ("name", "value"),
    [("gamma_scale", ""), ("gamma_scale", "1 2"), ("gamma_scale", "--x"), ("--gamma_scale", "1")],
)
def test_malformed_change_raises_configuration_error(
    squarecb: bytes, name: str, value: str
) -> None:
    """Option names with dashes and values that are not one word are refused."""
    with pytest.raises(ConfigurationError):
        rewrite_options(squarecb, {name: value})


def test_rewrite_changes_only_the_options_and_checksum(squarecb: bytes) -> None:
    """The bytes before the options and the learned state after the checksum are kept."""
    rewritten = rewrite_options(squarecb, {"gamma_scale": "1000"})
    options_at = squarecb.index(b" --") - 4  # the options' length field
    (length,) = struct.unpack_from("<I", squarecb, options_at)
    state_at = options_at + 4 + length + 8  # past the options and the checksum field
    assert rewritten[:options_at] == squarecb[:options_at]
    assert struct.unpack_from("<I", rewritten, options_at) == (length + 2,)
    assert rewritten[state_at + 2 :] == squarecb[state_at:]


# -- the weights table ----------------------------------------------------------------------


@pytest.mark.parametrize("exploration", ["epsilon", "squarecb", "rnd", "bag", "cover", "softmax"])
def test_the_weights_table_is_read_whole_and_a_poisoned_weight_is_found(exploration: str) -> None:
    """Every saved non-zero weight is a record after the learners' state; NaN is found."""
    from policies import Action
    from policies._vwmodel import learner_bytes, non_finite_weight
    from policies.vw import VWPolicy

    policy = VWPolicy(exploration=exploration, seed=3)  # type: ignore[arg-type]
    learners = learner_bytes(VWPolicy(exploration=exploration, seed=3)._save_model())
    actions = [Action("a", {"item": {"y": 1.0}}), Action("b"), Action("c")]
    for i in range(30):
        policy.learn({"user": {"x": i / 30, "tier": f"t{i % 4}"}}, actions, i % 3, 1.0, 1 / 3)
    model = policy._save_model()
    weights = policy._vw.json_weights().count('"index"')
    assert learner_bytes(model) - learners == 16 * weights  # the table: a record a weight
    assert non_finite_weight(model, learners) is None
    with pytest.raises(SnapshotError, match="not a whole number"):
        non_finite_weight(model, learners + 4)
    policy._learn({"user": {"x": 1.0}}, actions, 0, 1e308, 1 / 3)  # past the input checks
    found = non_finite_weight(policy._save_model(), learners)
    assert found is not None
    assert f"weight {found} is NaN or infinite" in (policy._non_finite() or "")


def test_a_model_of_a_layout_not_known_is_checked_by_vw_json_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should the table not be where it is expected, VW's own JSON writer decides."""
    from policies import Action
    from policies import vw as vw_module
    from policies.vw import VWPolicy

    policy = VWPolicy(seed=3)
    actions = [Action("a"), Action("b")]
    for i in range(10):
        policy.learn({"user": {"x": 1.0}}, actions, i % 2, 1.0, 0.5)
    monkeypatch.setitem(vw_module._LEARNERS_SIZES, policy._arguments(), 3)
    assert policy._non_finite() is None
    policy._learn({"user": {"x": 1.0}}, actions, 0, 1e308, 0.5)
    assert "is NaN or infinite" in (policy._non_finite() or "")


def test_the_snapshot_after_a_check_takes_the_checked_model_and_only_that() -> None:
    """check_model's saved bytes serve the snapshot that follows, until VW sees an example."""
    from policies import Action, Policy
    from policies.vw import VWPolicy

    actions = [Action("a"), Action("b")]
    checked, plain = VWPolicy(seed=3), VWPolicy(seed=3)
    for policy in (checked, plain):
        for i in range(10):
            policy.learn({"user": {"x": 1.0}}, actions, i % 2, 1.0, 0.5)
    checked.check_model()
    assert checked.snapshot() == plain.snapshot()
    checked.check_model()
    for policy in (checked, plain):
        policy.learn({"user": {"x": 2.0}}, actions, 0, 0.5, 0.5)
        policy.pmf({"user": {"x": 2.0}}, actions)
    assert checked.snapshot() == plain.snapshot()
    assert Policy.restore(checked.snapshot()).n_learned == 11


# -- the model id (vw --id) ------------------------------------------------------------


def test_rewriting_the_model_id_gives_the_bytes_vw_saves_with_it(tmp_path: Path) -> None:
    """An untrained model given id 'warm' is the file VW saves when built with --id warm."""
    plain = _trained(SQUARECB, tmp_path, steps=0)
    with_id = _trained(f"{SQUARECB} --id warm", tmp_path, steps=0)
    assert read_model_id(plain) == ""
    assert read_model_id(with_id) == "warm"
    assert rewrite_model_id(plain, "warm") == with_id
    assert rewrite_model_id(with_id, "") == plain


def test_the_model_id_survives_loading_learning_and_saving(squarecb: bytes, tmp_path: Path) -> None:
    """VW keeps a rewritten id through a load, more learning and a save; weights are kept."""
    model = rewrite_model_id(squarecb, "import-personalizer:sha256=00ff")
    assert model.endswith(squarecb[-64:])  # the learned state is copied as it was
    vw = _load(model, tmp_path)
    assert _greedy(vw) == [0, 1, 2]
    _train(vw, 20, seed=5)
    path = tmp_path / "learned-on.vw"
    vw.save(str(path))
    vw.finish()
    assert read_model_id(path.read_bytes()) == "import-personalizer:sha256=00ff"


def test_the_model_id_and_the_options_rewrite_independently(squarecb: bytes) -> None:
    """Rewriting the options keeps the id; rewriting the id keeps the options."""
    model = rewrite_options(rewrite_model_id(squarecb, "x1"), {"gamma_scale": "100"})
    assert read_model_id(model) == "x1"
    assert "--gamma_scale 100" in read_options(rewrite_model_id(model, "y2"))


@pytest.mark.parametrize("bad", ["tab\tin", "naïve", "x" * 512])
def test_a_model_id_not_printable_ascii_or_too_long_is_refused(squarecb: bytes, bad: str) -> None:
    """The id must be printable ASCII of at most 511 characters (VW reads 512 with its NUL)."""
    with pytest.raises(ConfigurationError, match="printable ASCII of at most 511"):
        rewrite_model_id(squarecb, bad)
