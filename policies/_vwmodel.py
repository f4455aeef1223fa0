r"""Read and rewrite the options stored in a Vowpal Wabbit model file's header.

VW freezes some hyperparameters ("keep" options such as SquareCB's ``--gamma_scale`` or
cover's ``--psi``) into the header of a saved model, and refuses to reload the model
with a different value. :func:`rewrite_options` edits the stored value instead, so a
reloaded model keeps everything it learned and explores with the new setting.

The binary header (VW >= 8.0.3, written by ``save_load_header`` in VW's
``parse_regressor.cc``) is, with every integer a little-endian ``uint32``:

==========================  =========================================================
field                       bytes
==========================  =========================================================
version                     length, then that many bytes (``"9.11.9\0"``)
id                          length, then that many bytes (``"\0"`` when unset)
model marker                ``b"m"``
min and max label           two ``float32``
bits                        ``uint32`` (``--bit_precision``)
lda                         ``uint32``
ngrams                      count, then 3 bytes each
skips                       count, then 3 bytes each
options                     length, then the options text with a closing ``\0``
checksum                    length (4), then the ``uint32`` checksum
==========================  =========================================================

Everything after the checksum belongs to the learners and is copied unchanged. Each
learner of the stack writes its state in turn, from the top one (``cb_explore_adf``)
down to ``gd``, whose weights come last. VW 9 saves models "resumable" by default, so
``gd`` writes its online state and then, for every weight whose value is not zero, in
increasing index order, a record of the index (``uint32``: bit precisions up to 30)
and that weight's three ``float32`` slots (the weight, and the adaptive and normalized
learning rates' sums), to the end of the file. :func:`non_finite_weight` reads that
table's weights.

The checksum chains MurmurHash3 (x86, 32 bit; VW's ``uniform_hash``) over the header as
VW's ``io_buf`` reads or writes it: hashing starts *after* the version field, and each
read or write call is one chunk hashed with the previous chunk's hash as its seed (0
for the first). A length-prefixed field is two chunks (the length, then the bytes);
every fixed-size field is one chunk (the two labels are two chunks); the checksum
field itself is not hashed.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.utils import murmurhash3_32

from policies.errors import ConfigurationError, SnapshotError

__all__ = [
    "MAX_MODEL_ID",
    "header_checksum",
    "learner_bytes",
    "non_finite_weight",
    "read_model_id",
    "read_options",
    "rewrite_model_id",
    "rewrite_options",
]

# First model version whose header has both the user id and the chained checksum.
_FIRST_VERSION = (8, 0, 3)
# VW reads the version and id into a 512-byte buffer, the options text up to 100 MB.
_MAX_SHORT_STRING = 512
_MAX_OPTIONS = 104_857_600
_VERSION = re.compile(rb"(\d+)\.(\d+)\.(\d+)")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_U32 = struct.Struct("<I")
# A record of gd's weights table: the index, then the weight's three slots.
_WEIGHT = np.dtype([("index", "<u4"), ("slots", "<f4", (3,))])


MAX_MODEL_ID = _MAX_SHORT_STRING - 1
"""The longest model id (``vw --id``) a header holds, in bytes: VW reads 512 with its NUL."""


@dataclass(frozen=True)
class _Header:
    """A parsed header: the hashed chunks before the options, the options and the rest."""

    prefix: bytes  # every byte before the options' length field
    chunks: tuple[bytes, ...]  # the hashed chunks inside `prefix`, in order
    options: str  # the options text without its closing NUL
    body: bytes  # everything after the checksum
    raw_options: bytes  # the options text as stored (its NUL included)
    model_id: bytes  # the model id as stored (its NUL included), b"" when empty
    id_span: tuple[int, int]  # where the id's length field and bytes are in `prefix`


class _Reader:
    """Cut a model into fields, raising :class:`SnapshotError` when it runs out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0
        self.chunks: list[bytes] = []

    def take(self, size: int, what: str, *, hashed: bool = True) -> bytes:
        end = self.position + size
        if end > len(self.data):
            msg = (
                f"VW model is truncated: {what} needs {size} bytes at offset {self.position}, "
                f"only {len(self.data) - self.position} left"
            )
            raise SnapshotError(msg)
        chunk = self.data[self.position : end]
        self.position = end
        if hashed and size > 0:  # VW hashes nothing for a zero-length read
            self.chunks.append(chunk)
        return chunk

    def u32(self, what: str, *, hashed: bool = True) -> int:
        value: int = _U32.unpack(self.take(_U32.size, what, hashed=hashed))[0]
        return value

    def sized(self, what: str, limit: int, *, hashed: bool = True) -> bytes:
        size = self.u32(f"the length of {what}", hashed=hashed)
        if size > limit:
            msg = f"VW model is corrupt: {what} claims {size} bytes, more than VW's {limit}"
            raise SnapshotError(msg)
        return self.take(size, what, hashed=hashed)


def header_checksum(chunks: Sequence[bytes]) -> int:
    """Return VW's chained header checksum of `chunks`, hashed in order.

    Parameters
    ----------
    chunks
        The header's fields as VW reads or writes them, from the id's length field
        up to the options text included.

    Returns
    -------
    int
        The unsigned 32-bit checksum.

    Examples
    --------
    >>> header_checksum([])
    0
    >>> header_checksum([b"ab", b"c"]) == header_checksum([b"abc"])
    False
    """
    value = 0
    for chunk in chunks:
        value = int(murmurhash3_32(bytes(chunk), seed=value, positive=True))
    return value


def _parse(model: bytes) -> _Header:
    reader = _Reader(model)
    raw_version = reader.sized("the version string", _MAX_SHORT_STRING, hashed=False)
    match = _VERSION.match(raw_version)
    if match is None:
        msg = f"not a VW model: its header starts with {raw_version[:32]!r}, not a version"
        raise SnapshotError(msg)
    version = match.group(0).decode("ascii")
    numbers = tuple(int(part) for part in match.groups())
    if numbers < _FIRST_VERSION:
        first = ".".join(map(str, _FIRST_VERSION))
        msg = f"VW model version {version} is too old to rewrite; need {first} or later"
        raise SnapshotError(msg)

    id_start = reader.position
    model_id = reader.sized("the model id", _MAX_SHORT_STRING)
    id_span = (id_start, reader.position)
    if reader.take(1, "the model marker") != b"m":
        msg = f"not a VW model: version {version} header lacks the model marker 'm'"
        raise SnapshotError(msg)
    reader.take(4, "the minimum label")
    reader.take(4, "the maximum label")
    reader.take(4, "the bit precision")
    reader.take(4, "the lda setting")
    for what in ("ngram", "skip"):
        count = reader.u32(f"the {what} count")
        if count > _MAX_OPTIONS:
            msg = f"VW model is corrupt: it claims {count} {what} settings"
            raise SnapshotError(msg)
        for _ in range(count):
            reader.take(3, f"a {what} setting")

    prefix = model[: reader.position]
    chunks = tuple(reader.chunks)
    raw_options = reader.sized("the options text", _MAX_OPTIONS)
    expected = header_checksum(reader.chunks)
    if reader.u32("the checksum's length", hashed=False) != _U32.size:
        msg = "VW model is corrupt or of an unknown layout: its checksum field is not 4 bytes"
        raise SnapshotError(msg)
    checksum = reader.u32("the checksum", hashed=False)
    if checksum != expected:
        msg = (
            f"VW model header checksum is {checksum:#010x} but its content hashes to "
            f"{expected:#010x}: the model is corrupt or of a layout this code does not know"
        )
        raise SnapshotError(msg)

    if raw_options and (not raw_options.endswith(b"\0") or b"\0" in raw_options[:-1]):
        msg = "VW model's options text is not one NUL-terminated string"
        raise SnapshotError(msg)
    try:
        options = raw_options[:-1].decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"VW model's options text is not UTF-8: {exc}"
        raise SnapshotError(msg) from exc
    return _Header(
        prefix, chunks, options, model[reader.position :], raw_options, model_id, id_span
    )


def read_options(model: bytes) -> str:
    """Return the options text stored in a VW model's header, checksum verified.

    Parameters
    ----------
    model
        The bytes of a binary VW model file, as written by ``Workspace.save``.

    Returns
    -------
    str
        The stored options, such as ``" --cb_explore_adf --gamma_scale 10 --squarecb"``.

    Raises
    ------
    SnapshotError
        If `model` is not a binary VW model of version 8.0.3 or later, or is corrupt.
    """
    return _parse(model).options


def read_model_id(model: bytes) -> str:
    """Return the model id stored in a VW model's header (``vw --id``), ``""`` when unset.

    VW keeps the id through every load (``-i``) and save, unless a command line gives
    another: a model that learned on from one keeps its id.

    Raises
    ------
    SnapshotError
        If `model` is not a binary VW model of version 8.0.3 or later, or is corrupt.
    """
    return _parse(model).model_id.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def rewrite_model_id(model: bytes, model_id: str) -> bytes:
    """Return `model` with `model_id` as its header's model id (``vw --id``), checksum redone.

    Only the id and the checksum change; the options and the learned state are copied
    byte for byte.

    Parameters
    ----------
    model
        The bytes of a binary VW model file, as written by ``Workspace.save``.
    model_id
        Printable ASCII, at most :data:`MAX_MODEL_ID` characters.

    Raises
    ------
    SnapshotError
        If `model` is not a binary VW model of version 8.0.3 or later, or is corrupt.
    ConfigurationError
        If `model_id` is not printable ASCII or too long.
    """
    if (
        not isinstance(model_id, str)
        or not model_id.isascii()
        or not model_id.isprintable()
        or len(model_id) > MAX_MODEL_ID
    ):
        msg = f"a VW model id must be printable ASCII of at most {MAX_MODEL_ID} characters"
        raise ConfigurationError(msg)
    header = _parse(model)
    start, end = header.id_span
    stored = model_id.encode("ascii") + b"\0"
    length = _U32.pack(len(stored))
    before = 2 if header.model_id else 1  # VW hashes nothing for an empty id's bytes
    chunks = [length, stored, *header.chunks[before:]]
    options_length = _U32.pack(len(header.raw_options))
    chunks += [options_length, header.raw_options] if header.raw_options else [options_length]
    checksum = header_checksum(chunks)
    return b"".join(
        [
            header.prefix[:start],
            length,
            stored,
            header.prefix[end:],
            options_length,
            header.raw_options,
            _U32.pack(_U32.size),
            _U32.pack(checksum),
            header.body,
        ]
    )


def _check_changes(changes: Mapping[str, str]) -> None:
    for name, value in changes.items():
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            msg = f"option names are VW long names without dashes, like 'gamma_scale'; got {name!r}"
            raise ConfigurationError(msg)
        if (
            not isinstance(value, str)
            or not value
            or value.startswith("--")
            or "\0" in value
            or any(ch.isspace() for ch in value)
        ):
            msg = f"the value for --{name} must be one non-empty word, got {value!r}"
            raise ConfigurationError(msg)


def rewrite_options(model: bytes, changes: Mapping[str, str]) -> bytes:
    """Return `model` with the values of stored options replaced and its checksum redone.

    Only the options text and the checksum change; the learned state after the header
    is copied byte for byte. Each changed option must be stored exactly once with one
    value (``--gamma_scale 10``); VW stores an option only when it was given on the
    command line, and checks new values only when the model is loaded.

    Changing an option that shapes the learned state, such as the number of ``--cover``
    or ``--bag`` policies, ``--cb_type`` or the interactions, makes a model VW cannot
    load or one that misreads its weights: change only settings of the exploration
    rule itself (``gamma_scale``, ``gamma_exponent``, ``psi``).

    Parameters
    ----------
    model
        The bytes of a binary VW model file, as written by ``Workspace.save``.
    changes
        New values by option name without dashes, such as ``{"gamma_scale": "100"}``,
        written as VW reads them on its command line.

    Returns
    -------
    bytes
        The rewritten model.

    Raises
    ------
    SnapshotError
        If `model` is not a binary VW model of version 8.0.3 or later, is corrupt, or
        does not store one of the options of `changes` exactly once with a value.
    ConfigurationError
        If an option name is not a bare VW long name or a value is not one word.
    """
    _check_changes(changes)
    header = _parse(model)
    tokens = header.options.split(" ")
    for name, value in changes.items():
        flag = f"--{name}"
        places = [index for index, token in enumerate(tokens) if token == flag]
        if not places:
            msg = f"VW model does not store {flag}; its stored options are {header.options!r}"
            raise SnapshotError(msg)
        if len(places) > 1:
            msg = f"VW model stores {flag} {len(places)} times; only single options can change"
            raise SnapshotError(msg)
        where = places[0] + 1
        if where >= len(tokens) or not tokens[where] or tokens[where].startswith("--"):
            msg = f"VW model stores {flag} as a switch without a value; it cannot be set"
            raise SnapshotError(msg)
        tokens[where] = value

    options = " ".join(tokens).encode("utf-8") + b"\0"
    if len(options) > _MAX_OPTIONS:
        msg = f"rewritten options would take {len(options)} bytes, more than VW reads"
        raise SnapshotError(msg)
    length = _U32.pack(len(options))
    checksum = header_checksum([*header.chunks, length, options])
    return b"".join(
        [
            header.prefix,
            length,
            options,
            _U32.pack(_U32.size),
            _U32.pack(checksum),
            header.body,
        ]
    )


def learner_bytes(model: bytes) -> int:
    """Return how many bytes follow a VW model's header: what its learners saved.

    In a model that learned nothing, ``gd``'s weights table is empty: this is then the
    size of the learners' state before the table, which :func:`non_finite_weight` takes.

    Raises
    ------
    SnapshotError
        If `model` is not a binary VW model of version 8.0.3 or later, or is corrupt.
    """
    return len(_parse(model).body)


def non_finite_weight(model: bytes, learners: int) -> int | None:
    r"""Return the index of a saved weight that is NaN or infinite; None when none is.

    Reads ``gd``'s weights table at the end of a resumable model (see the module's
    docstring) in one vectorised pass over every weight that is not zero. (Its
    learning-rate sums are not read: squared gradients of inputs at their limits may
    sum to infinity, which only stops that weight from moving.)

    Parameters
    ----------
    model
        The bytes of a binary VW model file, as written by ``Workspace.save``.
    learners
        How many bytes the learners write after the header and before the table: as
        many as in a model of the same options that learned nothing (whose table is
        empty), a size that learning does not change.

    Returns
    -------
    int or None
        The index of the first weight holding a NaN or an infinity.

    Raises
    ------
    SnapshotError
        If `model` is not a model whose table starts `learners` bytes after its header
        (not a whole number of records, or indices not increasing): a layout this code
        does not know.

    Examples
    --------
    >>> import numpy as np
    >>> table = np.array([(3, (0.5, 1.0, 1.0)), (9, (np.nan, 1.0, 1.0))], dtype=_WEIGHT)
    >>> chunks = [_U32.pack(1), b"\0", b"m", *[bytes(4)] * 4, _U32.pack(0), _U32.pack(0)]
    >>> chunks += [_U32.pack(1), b"\0"]  # the options text: empty
    >>> checksum = _U32.pack(4) + _U32.pack(header_checksum(chunks))
    >>> header = _U32.pack(7) + b"9.11.9\0" + b"".join(chunks) + checksum
    >>> non_finite_weight(header + b"state" + table.tobytes(), learners=5)
    9
    >>> non_finite_weight(header + b"state" + table[:1].tobytes(), learners=5) is None
    True
    """
    body = _parse(model).body
    size = len(body) - learners
    if size < 0 or size % _WEIGHT.itemsize:
        msg = (
            f"VW model's weights table is {size} bytes after {learners} bytes of learner "
            f"state, not a whole number of {_WEIGHT.itemsize}-byte records"
        )
        raise SnapshotError(msg)
    table = np.frombuffer(body, dtype=_WEIGHT, offset=learners)
    indices = table["index"]
    if len(indices) > 1 and not bool((indices[1:] > indices[:-1]).all()):
        msg = "VW model's weights table does not hold increasing indices"
        raise SnapshotError(msg)
    bad = ~np.isfinite(table["slots"][:, 0])  # the weights (the sums may reach inf)
    if not bad.any():
        return None
    return int(indices[int(bad.argmax())])
