"""read_log's columnar cache: used while the log is unchanged, never giving other data."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

import replay.readers
from bandit.ops import cli
from policies.errors import LogFormatError
from replay import LoggedDecisions, ReadResult, read_log, to_dsjson
from tests.replay.test_feature_rows import MIXED, _log, _typed

runner = CliRunner()


def _same(a: ReadResult, b: ReadResult) -> None:
    """Assert two reads gave the same decisions, counts and messages."""
    x, y = a.logs, b.logs
    for name in ("n_actions", "chosen", "propensity", "reward"):
        assert np.array_equal(getattr(x, name), getattr(y, name)), name
    assert (x.probabilities is None) == (y.probabilities is None)
    if x.probabilities is not None:
        assert np.array_equal(x.probabilities, y.probabilities)  # type: ignore[arg-type]
    assert x.action_ids == y.action_ids
    assert x.event_ids == y.event_ids
    assert x.contexts == y.contexts
    assert x.action_features == y.action_features
    assert (x.position is None) == (y.position is None)
    if x.position is not None:
        assert np.array_equal(x.position, y.position)  # type: ignore[arg-type]
    assert (a.rows_read, dict(a.skipped), a.messages) == (b.rows_read, dict(b.skipped), b.messages)


def _no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any read of a log file itself fail, so only a cache can answer."""

    def refuse(*args: object, **kwargs: object) -> None:
        msg = "the log was read, not its cache"
        raise AssertionError(msg)

    monkeypatch.setattr(replay.readers, "_read_file", refuse)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "logs" / "log.dsjson"
    path.parent.mkdir()
    to_dsjson(_log(50), path)
    return path


def test_a_second_read_comes_from_the_cache_and_equals_the_first(
    log_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hit: the second read does not parse the log, and gives exactly what the first did."""
    cache = tmp_path / "cache"
    first = read_log(log_path, cache=True, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1
    _no_parsing(monkeypatch)
    second = read_log(log_path, cache=True, cache_dir=cache)
    _same(first, second)
    _same(first, read_log(log_path, cache=True, cache_dir=cache, features=True))


def test_the_default_cache_sits_beside_the_log_and_a_folder_read_skips_it(
    log_path: Path,
) -> None:
    """Without cache_dir: .streambandit-cache beside the file, never read as a log itself."""
    first = read_log(log_path, cache=True)
    (cached,) = (log_path.parent / ".streambandit-cache").iterdir()
    assert cached.name.endswith(".streambandit-cache.parquet")
    again = read_log(log_path.parent, cache=True)
    assert again.files == (log_path,)
    _same(first, again)


def test_a_changed_log_is_read_again(log_path: Path, tmp_path: Path) -> None:
    """Miss: after the file changes (size and time), its new rows are seen, not the cache's."""
    cache = tmp_path / "cache"
    before = read_log(log_path, cache=True, cache_dir=cache)
    more = tmp_path / "more.dsjson"
    to_dsjson(_log(60), more)
    log_path.write_bytes(more.read_bytes())
    os.utime(log_path, ns=(1, 1))  # even with an old time: the size differs
    after = read_log(log_path, cache=True, cache_dir=cache)
    assert (before.rows_kept, after.rows_kept) == (50, 60)
    _same(after, read_log(log_path))


def test_same_size_but_a_new_time_is_read_again(log_path: Path, tmp_path: Path) -> None:
    """Miss: a rewrite of the same size with a later modification time is read again."""
    cache = tmp_path / "cache"
    before = read_log(log_path, cache=True, cache_dir=cache)
    text = log_path.read_bytes()
    at = text.index(b'"_label_cost":-0.') + len(b'"_label_cost":-0.')
    changed = text[:at] + (b"1" if text[at : at + 1] != b"1" else b"2") + text[at + 1 :]
    assert len(changed) == len(text)
    assert changed != text
    log_path.write_bytes(changed)
    stat = log_path.stat()
    os.utime(log_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = read_log(log_path, cache=True, cache_dir=cache)
    assert after.logs.reward[0] != before.logs.reward[0]
    _same(after, read_log(log_path))


def test_other_options_keep_their_own_cache(log_path: Path, tmp_path: Path) -> None:
    """A read without features is cached apart, and neither stands in for the other."""
    cache = tmp_path / "cache"
    bare = read_log(log_path, cache=True, cache_dir=cache, features=False)
    full = read_log(log_path, cache=True, cache_dir=cache)
    assert bare.logs.contexts is None
    assert full.logs.contexts is not None
    assert len(list(cache.iterdir())) == 2
    _same(read_log(log_path, cache=True, cache_dir=cache, features=False), bare)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_a_corrupt_cache_is_ignored_with_a_warning_and_written_anew(
    log_path: Path, tmp_path: Path, damage: str
) -> None:
    """A cache that cannot be read whole warns, the log is read instead, the cache rewritten."""
    cache = tmp_path / "cache"
    expected = read_log(log_path, cache=True, cache_dir=cache)
    (file,) = cache.iterdir()
    data = bytearray(file.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"not parquet at all")
    else:  # a flipped byte inside the first data page: the page checksum catches it
        data[len(data) // 4] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="cannot be read .* reading the log again"):
        damaged = read_log(log_path, cache=True, cache_dir=cache)
    _same(expected, damaged)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _same(expected, read_log(log_path, cache=True, cache_dir=cache))


def test_an_unwritable_cache_folder_warns_and_reads(log_path: Path, tmp_path: Path) -> None:
    """A cache that cannot be written is left out, with a warning; the read goes on."""
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="cannot write the cache"):
        result = read_log(log_path, cache=True, cache_dir=blocker / "cache")
    _same(result, read_log(log_path))


def test_skipped_rows_and_cross_file_duplicates_are_kept_as_without_a_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counts, messages and duplicates across files come back as a read without cache."""
    folder = tmp_path / "logs"
    folder.mkdir()
    logs = _log(30)
    to_dsjson(logs, folder / "a.dsjson")
    to_dsjson(logs.take(np.arange(20, 30)), folder / "b.dsjson")  # 10 repeated event ids
    with (folder / "b.dsjson").open("ab") as file:
        file.write(b"{not json\n")
    cache = tmp_path / "cache"
    plain = read_log(folder, on_error="skip")
    assert dict(plain.skipped) == {"invalid_json": 1, "duplicate": 10}
    _same(plain, read_log(folder, on_error="skip", cache=True, cache_dir=cache))
    _no_parsing(monkeypatch)
    _same(plain, read_log(folder, on_error="skip", cache=True, cache_dir=cache))
    alone = read_log(folder / "b.dsjson", on_error="skip", cache=True, cache_dir=cache)
    assert (alone.rows_kept, dict(alone.skipped)) == (10, {"invalid_json": 1})


def test_a_log_without_ids_or_probabilities_round_trips(tmp_path: Path) -> None:
    """Columns the log lacks (action ids, distributions, event ids) stay absent."""
    path = tmp_path / "log.jsonl"
    path.write_text(
        '{"actions": ["a", "b"], "chosen": 1, "probability": 0.25, "reward": 1.0}\n'
        '{"actions": ["a", "b", "c"], "chosen": 2, "probability": 0.5, "reward": 0.0,'
        ' "event_id": "e2", "context": {"u": {"x": 1}}}\n'
    )
    first = read_log(path, cache=True, cache_dir=tmp_path / "c")
    second = read_log(path, cache=True, cache_dir=tmp_path / "c")
    assert second.logs.event_ids is None
    assert second.logs.probabilities is None
    _same(first, second)
    _same(first, read_log(path))


def test_the_cli_caches_beside_the_log_unless_told_not_to(tmp_path: Path) -> None:
    """replay caches by default, --cache-dir moves it, --no-cache keeps none."""
    folder = tmp_path / "logs"
    folder.mkdir()
    logs: LoggedDecisions = _log(40)
    to_dsjson(logs, folder / "log.dsjson")
    base = ["replay", str(folder), "--policy", "uniform", "-e", "ips", "--bootstrap", "0"]
    assert runner.invoke(cli.app, [*base, "--no-cache"]).exit_code == 0
    assert not (folder / ".streambandit-cache").exists()
    result = runner.invoke(cli.app, [*base, "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "c").iterdir())) == 1
    assert not (folder / ".streambandit-cache").exists()
    first = runner.invoke(cli.app, base)
    assert first.exit_code == 0, first.output
    assert len(list((folder / ".streambandit-cache").iterdir())) == 1
    second = runner.invoke(cli.app, base)
    assert second.stdout.split("decisions x")[0] == first.stdout.split("decisions x")[0]


def test_context_values_of_every_kind_come_back_from_the_cache(tmp_path: Path) -> None:
    """Strings, ints beyond 2**53, floats (bools read as 1.0, 0.0): back as read, types too."""
    path = tmp_path / "log.jsonl"
    contexts = [
        {ns: {k: v for k, v in f.items() if v is not None} for ns, f in c.items()} for c in MIXED
    ]
    path.write_bytes(
        b"\n".join(
            orjson.dumps(
                {"actions": ["a"], "chosen": 0, "probability": 1.0, "reward": 0.0, "context": c}
            )
            for c in contexts
        )
    )
    read_log(path, cache=True, cache_dir=tmp_path / "c")
    cached = read_log(path, cache=True, cache_dir=tmp_path / "c")
    assert _typed(cached.logs.contexts) == _typed(read_log(path).logs.contexts)
    assert cached.logs.contexts[2]["user"]["age"] == 2**60  # type: ignore[index]


def test_a_cache_file_is_not_read_as_a_log(log_path: Path, tmp_path: Path) -> None:
    """Given a cache file as a log, the reader says what it is instead of reading it."""
    read_log(log_path, cache=True, cache_dir=tmp_path / "c")
    (cached,) = (tmp_path / "c").iterdir()
    with pytest.raises(LogFormatError, match="a cache of streambandit's, not a log"):
        read_log(cached)


def test_a_log_whose_rows_were_all_skipped_is_cached_too(tmp_path: Path) -> None:
    """No row kept: the cache still gives the counts and messages, and no warning."""
    path = tmp_path / "bad.jsonl"
    path.write_text('{"actions": ["a"], "chosen": 3, "probability": 0.5, "reward": 1}\n')
    first = read_log(path, on_error="skip", cache=True, cache_dir=tmp_path / "c")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = read_log(path, on_error="skip", cache=True, cache_dir=tmp_path / "c")
    assert (second.rows_read, second.rows_kept, dict(second.skipped)) == (1, 0, {"bad_chosen": 1})
    _same(first, second)


def test_positions_come_back_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log whose rows carry positions gives them again from its cache, as read."""
    path = tmp_path / "log.jsonl"
    lines = [
        {"actions": ["a", "b", "c"], "chosen": i % 3, "probability": 1 / 3, "reward": i % 2,
         "position": i % 4, "event_id": f"e{i}"}
        for i in range(40)
    ]  # fmt: skip
    path.write_bytes(b"\n".join(map(orjson.dumps, lines)) + b"\n")
    first = read_log(path, cache=True, cache_dir=tmp_path / "cache")
    assert first.logs.position is not None
    assert first.logs.position.tolist() == [i % 4 for i in range(40)]
    _no_parsing(monkeypatch)
    _same(first, read_log(path, cache=True, cache_dir=tmp_path / "cache"))
