"""Training records: decoded once, written once in VW's two formats, for learner and log.

The worker reads the ``training`` topic with one batch consumer that feeds both the
learner (:class:`streams.learner.Learner`) and the decision log (:mod:`streams.sink`).
Each record is decoded once (:func:`decode_training`):

1. its JSON is checked against the rules of :class:`~bandit.wire.schemas.TrainingExample` by
   :func:`bandit.wire.fastpath.training_data`, into plain data, without building models;
2. a learnable example is then written, in one pass over its features that also checks
   them (:func:`bandit.wire.fastpath.feature_rules`), both as the text VW learns (what
   :meth:`policies.vw.VWPolicy.learn` would write) and as its decision log line
   (:func:`policies.vw.logged_example`);
3. what these fast paths cannot vouch for is validated by pydantic, and what pydantic
   refuses becomes a dead letter with pydantic's reason, as before.

A VW policy learns the text through VW's native binding
(:meth:`~policies.vw.VWPolicy.learn_logged`), any other policy from the plain data
(:meth:`TrainingRecord.learn_inputs`); the decision log keeps the line
(:meth:`TrainingRecord.log_entry`). What the one-pass writer leaves alone (a value that
needs escaping, say) is written by the general functions, to the same result.

Decoding processes
------------------
Decoding and writing cost about three times what VW's learning step costs, all of it
Python holding the interpreter lock. :class:`TrainingDecoder` therefore shares large
batches (a backlog) with helper processes (``python -m streams.training``, as many as
``settings.learner.decode_processes``), which run steps 1 and 2 on most of a batch and
send back, per record, what the learner and the log need (policy, event id, consent,
the two written formats); the worker decodes the rest meanwhile, and does everything
else (step 3, dead letters) as before. The batch consumer fetches and decodes the next
batches while the worker learns the current one (:class:`streams.batch.BatchConsumer`,
``prepare``).
Helpers are started on the first large batch and die with the worker (Linux's
parent-death signal); when a helper fails, its part of the batch is decoded in the
worker and a new helper starts with the next batch: decoding in a helper is only ever
faster, never different. Small batches (live traffic) are decoded in the worker, where
they cost less than the round trip.

The helpers speak ``marshal`` (bytes, strings, booleans and tuples), through two files
in shared memory only the worker and its helper can reach, their sizes through the
helper's stdin and stdout: they are this same program, started by the worker, never a
peer on a network.

Examples
--------
>>> from bandit.settings import Limits
>>> raw = (
...     b'{"event_id": "e1", "reward": 1.0, "reward_count": 1, "default_reward": false,'
...     b' "decision": {"event_id": "e1", "policy": "p", "model_version": "1",'
...     b' "context": {"user": {"tier": "gold"}}, "explored": false,'
...     b' "actions": [{"id": "a"}, {"id": "b", "features": {"item": {"size": 2}}}],'
...     b' "ranking": [{"id": "b", "probability": 0.75}, {"id": "a", "probability": 0.25}],'
...     b' "chosen_action_id": "b", "chosen_index": 1, "probability": 0.75,'
...     b' "occurred_at": "2026-11-27T23:15:00Z"}}'
... )
>>> record = decode_training(RawRecord("sb.training", 0, 7, b"p", raw), limits=Limits())
>>> record.policy, record.event_id, record.learnable
('p', 'e1', True)
>>> print(record.written.text)
shared |cuser tier=gold
|id id=a
0:-1.0:0.75 |aitem size:2 |id id=b
>>> decode_training(RawRecord("sb.training", 0, 8, b"p", b"{}"), limits=Limits()).reason
'event_id: Field required [missing]; decision: Field required [missing]; ...'
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import marshal
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog
from pydantic import TypeAdapter

from bandit.service.process import die_with_parent  # Linux: the helper is killed when we die
from bandit.settings import Limits
from bandit.wire.fastpath import feature_rules, features_ok, training_data
from bandit.wire.schemas import DeadLetter, TrainingExample
from policies import Action, Context
from policies.dsjson import FeatureRules, LoggedExample, dsjson_line, logged_example
from streams.deadletter import DEAD_LETTER_MAX_BYTES, RawRecord, decode_record
from streams.sink import LogEntry, dsjson_extra, training_record

__all__ = [
    "TrainingDecoder",
    "TrainingRecord",
    "decode_training",
    "decode_values",
    "write_training",
]

_log = structlog.get_logger("streams.training")

_ADAPTER: TypeAdapter[TrainingExample] = TypeAdapter(TrainingExample)
_NO_FEATURES: dict[str, Any] = {}
# Records are checked against the worker's limits before they become TrainingRecords, so
# one read back from its JSON later is read with the widest limits there are.
_WIDEST = Limits(
    max_actions=10_000,
    max_namespaces=256,
    max_features_per_namespace=4096,
    max_key_length=256,
    max_string_length=65_536,
    max_id_length=1024,
)
_HEADER = 8  # bytes of a frame's length, little-endian
_READY = b"\xff" * _HEADER  # the frame a helper sends once it can decode
_HELPER_TIMEOUT_SECONDS = 60.0  # a helper this late on a batch is replaced
# tmpfs on Linux, for the helpers' request and answer files: made with mkstemp (private
# to this user) and unlinked at once, so nobody else can open them.
_SHARED_FOLDER = Path("/dev/shm")  # noqa: S108
_FIRST_SHARE = 0.8  # of a large batch sent to a helper, until measured
_LEAST_SHARE, _MOST_SHARE = 0.25, 0.95  # (some kept here, to keep measuring)
_SHARE_STEP = 0.5  # how far the share moves toward its measured best after a batch

Decoded = tuple[str, str, bool, str, bytes] | None
"""What :func:`decode_values` returns per record: ``(policy, event_id, learnable, text,
dsjson)`` (text and DSJSON empty when not learnable), or None: decode it again with
:func:`decode_training`."""


@dataclass(frozen=True, slots=True)
class TrainingRecord:
    """A decoded training example and where it was consumed from.

    Attributes
    ----------
    partition, offset
        Where the record was consumed from.
    policy, event_id
        The policy the example trains, and the decision's event id.
    learnable
        Whether the decision may be learned from and kept (learning consent).
    written
        The example in VW's formats, when it was written on decoding: VW policies learn
        its text, the decision log keeps its line.
    example
        The example: its model, or its values as plain data (as
        :func:`bandit.wire.fastpath.training_data` returns them); None when only `value`
        is kept (a record decoded in a helper process).
    value
        The record's JSON, read again when `example` is None and needed.
    """

    partition: int
    offset: int
    policy: str
    event_id: str
    learnable: bool
    written: LoggedExample | None = None
    example: TrainingExample | Mapping[str, Any] | None = None
    value: bytes | None = None

    @classmethod
    def of(
        cls,
        partition: int,
        offset: int,
        example: TrainingExample | Mapping[str, Any],
        written: LoggedExample | None = None,
    ) -> TrainingRecord:
        """Return the record of `example` (a model, or its values as plain data)."""
        if isinstance(example, TrainingExample):
            decision = example.decision
            return cls(
                partition,
                offset,
                decision.policy,
                example.event_id,
                decision.learn,
                written,
                example,
            )
        values = example["decision"]
        return cls(
            partition,
            offset,
            str(values["policy"]),
            str(example["event_id"]),
            bool(values["learn"]),
            written,
            example,
        )

    def values(self) -> Mapping[str, Any]:
        """Return the example's values as plain data (read from `value` if need be)."""
        example = self.example
        if isinstance(example, TrainingExample):
            return example.model_dump()
        if example is not None:
            return example
        assert self.value is not None, "a TrainingRecord keeps its example or its value"
        data = training_data(self.value, _WIDEST)
        if data is None:  # checked when decoded, so pydantic accepts it
            return _ADAPTER.validate_json(self.value, context={"limits": _WIDEST}).model_dump()
        return data

    def learn_inputs(self) -> tuple[Context, list[Action], int, float, float]:
        """Return what :meth:`policies.Policy.learn` takes for this example.

        ``(context, actions, chosen, reward, probability)``, the actions in offer order.
        """
        values = self.values()
        decision = values["decision"]
        actions = [
            Action(action["id"], action.get("features", _NO_FEATURES))
            for action in decision["actions"]
        ]
        chosen, probability = decision["chosen_index"], decision["probability"]
        return decision["context"], actions, chosen, values["reward"], probability

    def log_entry(self) -> LogEntry:
        """Return what the decision log keeps of this example.

        The line written on decoding when there is one; else it is written now
        (:func:`streams.sink.training_record`), which raises what
        :func:`policies.vw.dsjson_record` raises when it cannot be written.
        """
        if not self.learnable:
            return LogEntry(self.policy, self.event_id, learn=False, line=b"")
        if self.written is not None:
            line = self.written.dsjson
        else:
            line = dsjson_line(training_record(self.values()))
        return LogEntry(self.policy, self.event_id, learn=True, line=line)


def decode_training(
    record: RawRecord, *, limits: Limits, max_bytes: int = DEAD_LETTER_MAX_BYTES
) -> TrainingRecord | DeadLetter:
    """Decode a ``training`` record once, or return its dead letter.

    Parameters
    ----------
    record
        The record consumed.
    limits
        Size limits the example is validated against.
    max_bytes
        Larger records are dead-lettered unread.

    Returns
    -------
    TrainingRecord or DeadLetter
        The example as plain data, written in VW's formats when learnable; or the dead
        letter naming every rule it breaks (as :func:`streams.deadletter.decode_record`
        with ``TypeAdapter(TrainingExample)`` gives it).
    """
    value = record.value
    if value is not None and len(value) <= max_bytes:
        data = training_data(value, limits, check_features=False)
        if data is not None:
            # The features are checked as they are written; what the writer leaves alone
            # (or a decision not written) is checked apart.
            written = write_training(data, feature_rules(limits))
            if written is not None or features_ok(data["decision"], limits):
                return TrainingRecord.of(record.partition, record.offset, data, written)
    outcome = decode_record(_ADAPTER, record, limits=limits, max_bytes=max_bytes)
    if isinstance(outcome, DeadLetter):
        return outcome
    data = outcome.model_dump()
    return TrainingRecord.of(record.partition, record.offset, data, write_training(data))


def write_training(
    values: Mapping[str, Any], rules: FeatureRules | None = None
) -> LoggedExample | None:
    """Write a learnable example's values in VW's formats (:func:`policies.vw.logged_example`).

    Returns None for a decision without learning consent, or one the one-pass writer
    leaves to the general functions (or whose features break `rules`).
    """
    decision = values["decision"]
    if not decision["learn"]:
        return None
    actions: Sequence[Mapping[str, Any]] = decision["actions"]
    ids = [action["id"] for action in actions]
    position = dict(zip(ids, range(len(ids)), strict=True))
    ranking = decision["ranking"]
    by_id = {entry["id"]: entry["probability"] for entry in ranking}
    if len(position) != len(ids) or by_id.keys() != position.keys():
        return None
    return logged_example(
        decision["context"],
        ids,
        [action.get("features", _NO_FEATURES) for action in actions],
        decision["chosen_index"],
        [by_id[action_id] for action_id in ids],
        reward=values["reward"],
        event_id=decision["event_id"],
        timestamp=decision["occurred_at"],
        ranking=[position[entry["id"]] for entry in ranking],
        extra=dsjson_extra(values),
        rules=rules,
    )


def decode_values(
    values: Sequence[bytes | None], limits: Limits, max_bytes: int = DEAD_LETTER_MAX_BYTES
) -> list[Decoded]:
    """Decode what steps 1 and 2 vouch for (see the module docstring), in a helper process.

    Returns, per record, ``(policy, event_id, learnable, text, dsjson)``, or None where
    the record must be decoded with :func:`decode_training` (anything unusual).
    """
    rules = feature_rules(limits)
    decoded: list[Decoded] = []
    for value in values:
        found: Decoded = None
        data = None
        if value is not None and len(value) <= max_bytes:
            data = training_data(value, limits, check_features=False)
        if data is not None:
            decision = data["decision"]
            written = write_training(data, rules)
            if written is not None:
                found = (decision["policy"], data["event_id"], True, written.text, written.dsjson)
            elif not decision["learn"] and features_ok(decision, limits):
                found = (decision["policy"], data["event_id"], False, "", b"")
        decoded.append(found)
    return decoded


def _assemble(
    records: Sequence[RawRecord], decoded: Sequence[Decoded], limits: Limits, max_bytes: int
) -> list[TrainingRecord | DeadLetter]:
    out: list[TrainingRecord | DeadLetter] = []
    for record, found in zip(records, decoded, strict=True):
        if found is None:
            out.append(decode_training(record, limits=limits, max_bytes=max_bytes))
            continue
        policy, event_id, learnable, text, line = found
        written = LoggedExample(text, line) if learnable else None
        out.append(
            TrainingRecord(
                record.partition, record.offset, policy, event_id, learnable, written,
                value=record.value,
            )
        )  # fmt: skip
    return out


class TrainingDecoder:
    """Decode batches of ``training`` records, large ones partly in helper processes.

    A large batch is split: its first part goes to a helper, the rest is decoded here
    meanwhile (the consumer learns the previous batch meanwhile too). The helper's share
    follows the measured CPU time of both sides: it settles where the helper spends on
    its part of a batch what the worker's event loop thread spends on the rest of it
    and on learning a batch, so the two processes keep each other busy, whatever the
    machine.

    Parameters
    ----------
    limits
        Size limits the examples are validated against.
    max_bytes
        Larger records are dead-lettered unread.
    processes
        Helper processes for large batches (0: decode everything in this process).
    threshold
        Batches smaller than this are decoded in this process.
    """

    def __init__(
        self,
        limits: Limits,
        max_bytes: int = DEAD_LETTER_MAX_BYTES,
        *,
        processes: int = 1,
        threshold: int = 100,
    ) -> None:
        self.limits = limits
        self.max_bytes = max_bytes
        self.processes = processes
        self.threshold = threshold
        self.share = _FIRST_SHARE
        """The part of a large batch given to a helper, adjusted after every batch."""
        self._idle: asyncio.Queue[_Helper] | None = None
        self._limits_args = tuple(sorted(limits.model_dump().items()))
        self._cpu_before: float | None = None  # the loop thread's CPU time at the last split
        self._own_before = 0.0  # of which spent decoding its own part then

    def start(self) -> None:
        """Start the helper processes now, rather than on the first large batch.

        A helper takes a few seconds to import what it decodes with (more on a busy
        machine); started with the worker, it is ready when the first backlog comes.
        Until a helper says it is ready, batches are decoded in this process.
        """
        for helper in self._helpers():
            helper.spawn()

    async def wait_ready(self, timeout: float = _HELPER_TIMEOUT_SECONDS) -> None:
        """Start the helpers and wait until each is ready (or `timeout` seconds passed)."""
        self.start()
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        while not all(helper.ready for helper in self._helpers()) and loop.time() < until:
            await asyncio.sleep(0.05)

    def _helpers(self) -> list[_Helper]:
        if self.processes < 1:
            return []
        if self._idle is None:
            self._idle = asyncio.Queue()
            for _ in range(self.processes):
                self._idle.put_nowait(_Helper())
        return list(self._idle._queue)  # type: ignore[attr-defined]

    async def decode(self, records: Sequence[RawRecord]) -> list[TrainingRecord | DeadLetter]:
        """Decode `records` (each a :class:`TrainingRecord` or its dead letter), in order."""
        if self.processes < 1 or len(records) < self.threshold:
            return self._here(records)
        self._helpers()
        assert self._idle is not None
        helper = await self._idle.get()
        if helper.pid is None or not helper.ready:  # starting (or dead): not waited for
            helper.spawn()
            self._idle.put_nowait(helper)
            return self._here(records)
        cpu = own = time.thread_time()  # the event loop's thread: the one that learns
        split = min(len(records), max(1, round(len(records) * self.share)))
        sent, kept = records[:split], records[split:]
        request = (self._limits_args, self.max_bytes, [record.value for record in sent])
        try:
            try:
                answer = helper.start(request)  # the helper works from now on
            finally:
                here = self._here(kept)  # meanwhile
                own = time.thread_time() - own
            helper_cpu, decoded = marshal.loads(  # noqa: S302  (our own helper's answer)
                await asyncio.wait_for(answer, _HELPER_TIMEOUT_SECONDS)
            )
        except Exception:  # noqa: BLE001  # logged; its part is decoded here instead
            _log.exception("decoder.failed", records=len(sent))
            await helper.close()  # a new one starts on the next batch
            return self._here(sent) + here
        finally:
            self._idle.put_nowait(helper)
        self._balance(cpu, own, helper_cpu, len(sent), len(kept))
        return _assemble(sent, decoded, self.limits, self.max_bytes) + here

    def _balance(self, cpu: float, own: float, helper_cpu: float, sent: int, kept: int) -> None:
        """Move the helper's share toward equal CPU time per batch on both sides."""
        before, self._cpu_before, own_before = self._cpu_before, cpu, self._own_before
        self._own_before = own
        if before is None or sent == 0 or kept == 0:
            return
        # The loop thread's CPU since the last split: decoding its part of that batch,
        # learning one, assembling what helpers sent. Without its own decoding part:
        rest = max(cpu - before - own_before, 0.0)
        total = sent + kept
        here_per_record, helper_per_record = own / kept, helper_cpu / sent
        # Both sides equal: rest + (1 - f) * total * here = f * total * helper.
        target = (rest + total * here_per_record) / (total * (here_per_record + helper_per_record))
        target = min(max(target, _LEAST_SHARE), _MOST_SHARE)
        self.share += _SHARE_STEP * (target - self.share)

    def _here(self, records: Sequence[RawRecord]) -> list[TrainingRecord | DeadLetter]:
        limits, max_bytes = self.limits, self.max_bytes
        return [decode_training(record, limits=limits, max_bytes=max_bytes) for record in records]

    def helper_pids(self) -> list[int]:
        """Process ids of the helper processes running now (when idle)."""
        if self._idle is None:
            return []
        helpers: list[_Helper] = list(self._idle._queue)  # type: ignore[attr-defined]
        return [h.pid for h in helpers if h.pid is not None]

    async def close(self) -> None:
        """Stop the helper processes."""
        if self._idle is not None:
            while not self._idle.empty():
                await self._idle.get_nowait().close()
            self._idle = None


class _Helper:
    """One helper process (started on first use), called one batch at a time.

    Requests and answers (megabytes) are written to two files in shared memory that
    only the worker and the helper can reach (unlinked as soon as they are made; the
    helper inherits their descriptors), and a pipe each way carries only their sizes.
    The worker's event loop reads an answer as soon as its size arrives, with no thread:
    a thread copying megabytes through a pipe would wait for the interpreter lock on
    every chunk while the loop learns, and the helper with it.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._files: tuple[int, int] | None = None  # request, answer
        self._waiting: asyncio.Future[bytes] | None = None
        self.ready = False
        """Whether the process said it can decode (it sends a ready frame on start)."""

    @property
    def pid(self) -> int | None:
        """The process id, while the process runs."""
        process = self._process
        return None if process is None or process.poll() is not None else process.pid

    def spawn(self) -> subprocess.Popen[bytes]:
        """Return the running process, starting one if there is none (or it died)."""
        process = self._process
        if process is not None and process.poll() is not None:  # it died: a new one
            self._stopped()
            process = None
        if process is None:
            process = self._spawn()
            self._watch_ready(process)
        return process

    def _watch_ready(self, process: subprocess.Popen[bytes]) -> None:
        """Read the process's ready frame when it comes, without waiting for it."""
        assert process.stdout is not None
        loop = asyncio.get_running_loop()
        out = process.stdout.fileno()

        def readable() -> None:
            loop.remove_reader(out)
            if self._process is not process:
                return
            try:
                header = os.read(out, _HEADER)
            except OSError:
                return
            self.ready = header == _READY

        loop.add_reader(out, readable)

    def start(self, request: Any) -> asyncio.Future[bytes]:
        """Send `request` now; return the future of the answer: ``(CPU seconds, decoded)``."""
        process = self.spawn()
        assert self._files is not None
        assert process.stdin is not None
        assert process.stdout is not None
        payload = marshal.dumps(request)
        _pwrite(self._files[0], payload)
        process.stdin.write(len(payload).to_bytes(_HEADER, "little"))
        process.stdin.flush()
        loop = asyncio.get_running_loop()
        waiting = self._waiting = loop.create_future()
        out, answers = process.stdout.fileno(), self._files[1]

        def answered() -> None:
            loop.remove_reader(out)
            if waiting.done():  # given up on (a timeout)
                return
            try:
                header = os.read(out, _HEADER)  # written at once: all of it or nothing
                if header == _READY:  # sent on start, not read yet: the answer follows
                    self.ready = True
                    loop.add_reader(out, answered)
                    return
                if len(header) != _HEADER:
                    msg = "the decoding helper stopped before answering"
                    raise EOFError(msg)
                waiting.set_result(_pread(answers, int.from_bytes(header, "little")))
            except OSError as error:
                waiting.set_exception(error)
            except EOFError as error:
                waiting.set_exception(error)

        loop.add_reader(out, answered)
        return waiting

    def _spawn(self) -> subprocess.Popen[bytes]:
        files = self._files = (_shared_file(), _shared_file())
        # Started from the event loop's thread, which lives as long as the worker:
        # Linux sends the parent-death signal when the forking *thread* ends.
        process = self._process = subprocess.Popen(  # noqa: S603  (this very module)
            [sys.executable, "-m", "streams.training", *map(str, files)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=files,
            preexec_fn=die_with_parent,  # noqa: PLW1509  (only calls prctl, resolved at import)
        )
        return process

    async def close(self) -> None:
        """Stop the process (a new one starts on the next request)."""
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.to_thread(process.wait)
        self._stopped()

    def _stopped(self) -> None:
        """Let go of a process that ended: its pipes, files and pending answer."""
        process, self._process = self._process, None
        self.ready = False
        files, self._files = self._files, None
        waiting, self._waiting = self._waiting, None
        if process is not None and process.stdout is not None:
            with contextlib.suppress(RuntimeError, ValueError, OSError):
                asyncio.get_running_loop().remove_reader(process.stdout.fileno())
        if waiting is not None and not waiting.done():
            waiting.set_exception(EOFError("the decoding helper was stopped"))
        if process is not None:
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        for descriptor in files or ():
            with contextlib.suppress(OSError):
                os.close(descriptor)


def _shared_file() -> int:
    """Return the descriptor of a new file in shared memory (tmpfs), already unlinked."""
    folder = _SHARED_FOLDER if _SHARED_FOLDER.is_dir() else None
    descriptor, path = tempfile.mkstemp(prefix="streambandit-decode-", dir=folder)
    Path(path).unlink()
    return descriptor


def _pwrite(descriptor: int, data: bytes) -> None:
    view, done = memoryview(data), 0
    while done < len(data):
        done += os.pwrite(descriptor, view[done:], done)


def _pread(descriptor: int, size: int) -> bytes:
    data = os.pread(descriptor, size, 0)
    while len(data) < size:  # (a regular file reads whole, but to be sure)
        more = os.pread(descriptor, size - len(data), len(data))
        if not more:
            msg = f"the decoding helper's answer holds {len(data)} of {size} bytes"
            raise EOFError(msg)
        data += more
    return data


def _serve(requests: IO[bytes], answers: IO[bytes], files: tuple[int, int]) -> None:
    """Answer requests of :class:`TrainingDecoder` until the worker closes the pipe."""
    limits_of: dict[Any, Limits] = {}
    request_file, answer_file = files
    answers.write(_READY)  # everything is imported: the worker may send batches now
    answers.flush()
    while True:
        header = requests.read(_HEADER)
        if len(header) < _HEADER:
            return
        limits_args, max_bytes, values = marshal.loads(  # noqa: S302  (from our worker)
            _pread(request_file, int.from_bytes(header, "little"))
        )
        limits = limits_of.get(limits_args)
        if limits is None:
            limits = limits_of[limits_args] = Limits(**dict(limits_args))
        started = time.process_time()
        decoded = decode_values(values, limits, max_bytes)
        answer = marshal.dumps((time.process_time() - started, decoded))
        _pwrite(answer_file, answer)
        answers.write(len(answer).to_bytes(_HEADER, "little"))
        answers.flush()


if __name__ == "__main__":  # a helper process of TrainingDecoder
    from bandit.service.process import tune_gc

    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints: to the worker's log
    tune_gc()
    gc.disable()  # decoding makes no reference cycles: reference counting frees it all
    shared = (int(sys.argv[1]), int(sys.argv[2]))
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        _serve(sys.stdin.buffer, answers, shared)
