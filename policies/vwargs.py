"""VW command lines for a contextual bandit, read into :class:`~policies.vw.VWPolicy`'s parameters.

Personalizer's learning policy is a VW argument string (``--cb_explore_adf --epsilon 0.2
--cb_type ips -l 0.5 --l1 1E-07 --power_t 0.5``); this is where such a string is read.
Every option is either mapped onto a parameter of :class:`~policies.vw.VWPolicy`, accepted
and ignored because it only says how ``vw`` reads or prints (``--quiet``, ``--dsjson``), or
refused by name: options that touch files, daemons or the process (``-d``, ``-f``, ``-i``,
``--daemon``, ``--cache_file`` ...), and any option this mapping does not know.

An option left out means VW's own default, as for ``vw`` itself: no interactions, and
epsilon-greedy exploration with ``--epsilon 0.05`` when no exploration algorithm is named.

Examples
--------
>>> params = parse_arguments("--cb_explore_adf --epsilon 0.2 --dsjson --cb_type ips -l 0.5")
>>> params["exploration"], params["epsilon"], params["cb_type"], params["learning_rate"]
('epsilon', 0.2, 'ips', 0.5)
>>> parse_arguments("--cb_explore_adf -q :: --squarecb --gamma_scale 20")["interactions"]
['::']
>>> parse_arguments("--cb_explore_adf -d train.dsjson -f model.vw")
Traceback (most recent call last):
...
policies.errors.ConfigurationError: `arguments` must not name files, ...: '-d', '-f' (...)
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from typing import Any, Final

from policies.errors import ConfigurationError

__all__ = [
    "ARGUMENTS_MAX_LENGTH",
    "CB_TYPES",
    "LEARNING_PARAMS",
    "NAMESPACE_LETTERS",
    "SLOT_NAMESPACE_LETTER",
    "USES",
    "parse_arguments",
]

ARGUMENTS_MAX_LENGTH: Final = 1024
"""The longest argument string read (Personalizer's own bound)."""
_MAX_TOKENS: Final = 128
_MAX_REPEATS: Final = 16  # interactions or ignored namespaces

CB_TYPES: Final = ("ips", "dm", "dr", "mtr", "sm")
"""VW's ``--cb_type`` estimators for ``--cb_explore_adf`` (VW's default: ``mtr``)."""

NAMESPACE_LETTERS: Final = frozenset("cai:")
"""What an interaction or ``--ignore`` may name: the first letter of streambandit's VW
namespaces (``c`` context, ``a`` action features, ``i`` action id), or ``:`` (every one)."""
SLOT_NAMESPACE_LETTER: Final = "s"
"""... and, for a multi-slot policy (``--ccb_explore_adf``), a slot's features."""

_CCB: Final = "ccb_explore_adf"  # the multi-slot reduction: a vw-ccb policy's alone
# Options about how `vw` reads its input or prints: meaningless for a service.
_IGNORED: Final = frozenset({"quiet", "dsjson", "no_stdin", "cb_explore_adf"})

# Options that read or write files, open ports, start daemons or shape the process.
_PROCESS: Final = frozenset(
    {
        "data", "final_regressor", "initial_regressor", "daemon", "port", "num_children",
        "pid_file", "port_file", "foreground", "cache", "cache_file", "kill_cache",
        "readable_model", "invert_hash", "predictions", "raw_predictions", "save_per_pass",
        "save_resume", "output_feature_regularizer_binary", "output_feature_regularizer_text",
        "input_feature_regularizer", "feature_mask", "audit_regressor", "dictionary",
        "dictionary_path", "passes", "onethread", "extra_metrics", "log_output",
        "limit_output", "compressed", "json", "csv", "flatbuffer", "id", "testonly",
        "audit", "progress", "binary", "predict_only_model", "preserve_performance_counters",
    }
)  # fmt: skip

_SHORT: Final = {
    "d": "data", "f": "final_regressor", "i": "initial_regressor", "c": "cache",
    "k": "kill_cache", "p": "predictions", "r": "raw_predictions", "t": "testonly",
    "a": "audit", "P": "progress", "q": "quadratic", "l": "learning_rate", "b": "bit_precision",
}  # fmt: skip


def _float(option: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        msg = f"`arguments`: {option} takes a number, got {raw!r}"
        raise ConfigurationError(msg) from None


def _int(option: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        msg = f"`arguments`: {option} takes a whole number, got {raw!r}"
        raise ConfigurationError(msg) from None


def _namespaces(option: str, raw: str, *, multi_slot: bool) -> str:
    letters = NAMESPACE_LETTERS | {SLOT_NAMESPACE_LETTER} if multi_slot else NAMESPACE_LETTERS
    wrong = sorted(set(raw) - letters)
    if not raw or wrong:
        slot = ", 's' (a slot's features)" if multi_slot else ""
        msg = (
            f"`arguments`: {option} {raw!r} names namespaces this service does not write "
            f"({wrong or 'none'}); its namespaces start with 'c' (context), 'a' (action "
            f"features), 'i' (action id){slot}, and ':' stands for every one"
        )
        raise ConfigurationError(msg)
    return raw


def _cb_type(option: str, raw: str) -> str:
    if raw not in CB_TYPES:
        msg = f"`arguments`: {option} must be one of {list(CB_TYPES)}, got {raw!r}"
        raise ConfigurationError(msg)
    return raw


# option -> (parameter, how its value is read; None: a flag)
_VALUED: Final[dict[str, tuple[str, Callable[[str, str], Any]]]] = {
    "epsilon": ("epsilon", _float),
    "gamma_scale": ("gamma_scale", _float),
    "gamma_exponent": ("gamma_exponent", _float),
    "rnd_alpha": ("rnd_alpha", _float),
    "rnd_invlambda": ("rnd_invlambda", _float),
    "psi": ("psi", _float),
    "lambda": ("softmax_lambda", _float),
    "learning_rate": ("learning_rate", _float),
    "power_t": ("power_t", _float),
    "l1": ("l1", _float),
    "l2": ("l2", _float),
    "bit_precision": ("bit_precision", _int),
    "random_seed": ("seed", _int),
    "cb_type": ("cb_type", _cb_type),
    "bag": ("bag", _int),
    "cover": ("cover", _int),
    "rnd": ("rnd", _int),
}
_REPEATED: Final = {"quadratic": "interactions", "cubic": "interactions",
                    "interactions": "interactions", "ignore": "ignore"}  # fmt: skip
_FLAGS: Final = {"squarecb": "squarecb", "softmax": "softmax", "noconstant": "noconstant"}

# The exploration algorithm an option names.
_ALGORITHMS: Final = {"squarecb": "squarecb", "softmax": "softmax", "bag": "bag",
                      "cover": "cover", "rnd": "rnd"}  # fmt: skip

USES: Final[dict[str, tuple[str, ...]]] = {
    "epsilon": ("epsilon",),
    "squarecb": ("gamma_scale", "gamma_exponent"),
    "rnd": ("rnd", "rnd_alpha", "rnd_invlambda"),
    "bag": ("bag", "epsilon"),
    "cover": ("cover", "psi"),
    "softmax": ("softmax_lambda",),
}
"""Which hyperparameters each exploration algorithm reads; only these reach VW."""
_EXPLORATION_PARAMS: Final = frozenset(chain.from_iterable(USES.values()))

LEARNING_PARAMS: Final = frozenset(
    {"exploration", "cb_type", "interactions", "ignore", "noconstant", "learning_rate",
     "power_t", "l1", "l2", "bit_precision", "seed"}
)  # fmt: skip
"""The parameters every VW policy learns with, whatever its exploration (:data:`USES`)."""


VW_DEFAULT_EPSILON: Final = 0.05
"""VW's ``--epsilon`` when ``--cb_explore_adf`` is given no exploration option."""


def _tokens(arguments: str) -> list[tuple[str, str | None]]:
    """Split `arguments` into (option name as written, attached value or None) and values."""
    if len(arguments) > ARGUMENTS_MAX_LENGTH:
        msg = f"`arguments` must be at most {ARGUMENTS_MAX_LENGTH} characters, got {len(arguments)}"
        raise ConfigurationError(msg)
    words = arguments.split()
    if len(words) > _MAX_TOKENS:
        msg = f"`arguments` must hold at most {_MAX_TOKENS} words, got {len(words)}"
        raise ConfigurationError(msg)
    out: list[tuple[str, str | None]] = []
    for word in words:
        if word.startswith("--") and "=" in word:
            name, _, value = word.partition("=")
            out.append((name, value))
        elif word.startswith("-") and not word.startswith("--") and len(word) > 2:
            if _is_number(word):
                out.append((word, None))  # a value, read by the option before it
            else:
                out.append((word[:2], word[2:]))  # boost's -qca, -l0.5
        else:
            out.append((word, None))
    return out


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _option_name(written: str) -> str | None:
    """Return the long name of an option as written (``-l``: ``learning_rate``); None: a value."""
    if written.startswith("--") and len(written) > 2:
        return written[2:]
    if written.startswith("-") and len(written) == 2 and not written[1].isdigit():
        return _SHORT.get(written[1], written[1:])
    return None


def parse_arguments(arguments: str, *, multi_slot: bool = False) -> dict[str, Any]:
    """Read a VW ``--cb_explore_adf`` command line into :class:`~policies.vw.VWPolicy` parameters.

    Parameters
    ----------
    arguments
        The command line, at most :data:`ARGUMENTS_MAX_LENGTH` characters. It must hold
        ``--cb_explore_adf`` (and not ``--ccb_explore_adf``); with `multi_slot`, it must
        hold ``--ccb_explore_adf`` instead (``--cb_explore_adf`` may be given as well:
        VW's CCB runs on it), and interactions may name a slot's namespace
        (:data:`SLOT_NAMESPACE_LETTER`).
    multi_slot
        Read the command line of a multi-slot policy
        (:class:`~policies.vwccb.VWCCBPolicy`, VW's conditional contextual bandit).

    Returns
    -------
    dict
        The policy's parameters: ``exploration`` and those it reads, ``interactions``,
        ``ignore``, ``noconstant``, ``cb_type``, and the optimiser's; ``seed`` only when
        ``--random_seed`` is given. Left out options take VW's defaults.

    Raises
    ------
    ConfigurationError
        Naming every option refused: those touching files, daemons or the process, those
        this mapping does not know, values that do not read, an exploration parameter
        the named algorithm does not read, two algorithms at once.

    Examples
    --------
    >>> parse_arguments("--cb_explore_adf --cover 3 --psi 0.5 --noconstant")["exploration"]
    'cover'
    >>> parse_arguments("--cb_explore_adf --first 2")
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: `arguments` holds options ... a policy: '--first'; ...
    >>> parse_arguments("--ccb_explore_adf -q sa --epsilon 0.1", multi_slot=True)["interactions"]
    ['sa']
    >>> parse_arguments("--ccb_explore_adf --epsilon 0.1")
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: `arguments` holds --ccb_explore_adf ... single-slot ...
    """
    process: list[str] = []
    unknown: list[str] = []
    params: dict[str, Any] = {}
    repeated: dict[str, list[str]] = {"interactions": [], "ignore": []}
    algorithms: list[str] = []
    named = set()
    for written, name, raw in _options(_tokens(arguments)):
        named.add(name)
        if name in _PROCESS:
            process.append(written)
        elif name in _VALUED:
            param, read = _VALUED[name]
            params[param] = read(written, _needed(written, raw))
            algorithms += [_ALGORITHMS[name]] if name in _ALGORITHMS else []
        elif name in _REPEATED:
            value = _namespaces(written, _needed(written, raw), multi_slot=multi_slot)
            repeated[_REPEATED[name]].append(value)
        elif name == "noconstant":
            params["noconstant"] = True
        elif name in _FLAGS:
            algorithms.append(_FLAGS[name])
        elif name not in _IGNORED and name != _CCB:
            unknown.append(written)
    if process:
        listed = ", ".join(map(repr, process))
        msg = (
            f"`arguments` must not name files, daemons or the process: {listed} "
            "(the service reads its own input and keeps its own model)"
        )
        raise ConfigurationError(msg)
    if unknown:
        known = sorted({*_VALUED, *_REPEATED, *_FLAGS, *_IGNORED})
        msg = (
            f"`arguments` holds options this service does not map onto a policy: "
            f"{', '.join(map(repr, unknown))}; it maps {known}"
        )
        raise ConfigurationError(msg)
    if multi_slot and _CCB not in named:
        msg = (
            "`arguments` must hold --ccb_explore_adf: the policy is multi-slot (vw-ccb, VW's "
            "conditional contextual bandit), and --cb_explore_adf alone would make it single-slot"
        )
        raise ConfigurationError(msg)
    if not multi_slot and _CCB in named:
        msg = (
            "`arguments` holds --ccb_explore_adf (multi-slot), and the policy is single-slot "
            "(--cb_explore_adf): only a vw-ccb policy takes it"
        )
        raise ConfigurationError(msg)
    if not multi_slot and "cb_explore_adf" not in named:
        msg = "`arguments` must hold --cb_explore_adf (the contextual bandit this service runs)"
        raise ConfigurationError(msg)
    return _with_defaults(params, repeated, algorithms)


def _options(words: list[tuple[str, str | None]]) -> list[tuple[str, str, str | None]]:
    """Pair each option (as written, long name) with its value: attached, or the next word."""
    out: list[tuple[str, str, str | None]] = []
    index = 0
    while index < len(words):
        written, attached = words[index]
        index += 1
        name = _option_name(written)
        if name is None:
            msg = f"`arguments`: {written!r} is not an option and follows no option that takes it"
            raise ConfigurationError(msg)
        takes = name not in _FLAGS and name not in _IGNORED and name != _CCB
        if attached is None and takes and index < len(words):
            following = words[index][0]
            if _option_name(following) is None:
                attached = following
                index += 1
        out.append((written, name, attached))
    return out


def _needed(written: str, raw: str | None) -> str:
    if raw is None:
        msg = f"`arguments`: {written} needs a value"
        raise ConfigurationError(msg)
    return raw


def _with_defaults(
    params: dict[str, Any], repeated: dict[str, list[str]], algorithms: list[str]
) -> dict[str, Any]:
    if len(set(algorithms)) > 1:
        msg = f"`arguments` names more than one exploration algorithm: {sorted(set(algorithms))}"
        raise ConfigurationError(msg)
    exploration = algorithms[0] if algorithms else "epsilon"
    stray = sorted(set(params) & _EXPLORATION_PARAMS - set(USES[exploration]))
    if stray:
        msg = (
            f"`arguments`: {', '.join(stray)} does nothing with {exploration} exploration "
            f"(it reads {list(USES[exploration])})"
        )
        raise ConfigurationError(msg)
    if len(repeated["interactions"]) > _MAX_REPEATS or len(repeated["ignore"]) > _MAX_REPEATS:
        msg = f"`arguments` may name at most {_MAX_REPEATS} interactions and ignored namespaces"
        raise ConfigurationError(msg)
    found = {
        "exploration": exploration,
        "interactions": repeated["interactions"],
        "ignore": repeated["ignore"],
        "noconstant": params.pop("noconstant", False),
        "cb_type": params.pop("cb_type", "mtr"),
        "learning_rate": 0.5,
        "power_t": 0.5,
        "l1": 0.0,
        "l2": 0.0,
        "bit_precision": 18,
        **params,
    }
    if exploration in ("epsilon", "bag"):
        found.setdefault("epsilon", VW_DEFAULT_EPSILON)
    return found
