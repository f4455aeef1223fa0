"""`streambandit replay` on the Open Bandit Dataset sample that ships inside obp's source.

obp itself is not installed (it pins old dependencies): its source distribution is
downloaded once, without dependencies, into pytest's cache, and only the CSVs of the
uniformly random behaviour policy's "all" campaign are read.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bandit.ops import cli
from replay import TargetProbabilities, read_log
from replay.slates import IIPS

OBP = "obp==0.5.7"
SAMPLE = "obp/dataset/obd/random/all"  # inside the distribution's top folder
runner = CliRunner()


@pytest.fixture(scope="session")
def obd_sample(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder random/all of obp's bundled sample: all.csv and item_context.csv."""
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("obp-0.5.7") if cache is not None else tmp_path_factory.mktemp("obp")
    folder = root / "random" / "all"
    if (folder / "all.csv").is_file() and (folder / "item_context.csv").is_file():
        return folder
    download = root / "download"
    # 0.5.7 is a source distribution that declares Python < 3.11: fetch it as a file only
    # (pip still reads its metadata, in an isolated build environment of its own).
    command = [sys.executable, "-m", "pip", "download", OBP, "--no-deps"]
    command += ["--ignore-requires-python", "-d", str(download)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    archives = sorted(download.glob("obp-0.5.7*"))
    assert done.returncode == 0, f"pip download {OBP} failed: {done.stderr[-2000:]}"
    assert archives, f"pip download {OBP} left no archive in {download}"
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archives[0]) as archive:
        for member in archive.getmembers():
            name = member.name.split("/", 1)[-1]
            if name.startswith(f"{SAMPLE}/") and name.endswith(".csv"):
                source = archive.extractfile(member)
                assert source is not None
                part = folder / f"{Path(name).name}.part"  # whole files only, or none
                part.write_bytes(source.read())
                part.replace(folder / Path(name).name)
    return folder


def _clicks(folder: Path) -> tuple[list[float], dict[int, list[float]], dict[str, float]]:
    """The clicks of the CSV as the csv module reads them: all, by 1-based position, by item."""
    clicks: list[float] = []
    by_position: dict[int, list[float]] = defaultdict(list)
    by_item: dict[str, float] = defaultdict(float)
    with (folder / "all.csv").open(newline="") as file:
        for row in csv.DictReader(file):
            click = float(row["click"])
            clicks.append(click)
            by_position[int(row["position"])].append(click)
            by_item[row["item_id"]] += click
    return clicks, by_position, by_item


def test_replay_of_the_random_sample_by_position(obd_sample: Path, tmp_path: Path) -> None:
    """On uniformly random logs, IPS of uniform is the click rate; positions sum to a page's."""
    out = tmp_path / "replay.json"
    # the evaluated policy's probabilities, as an experimenter's file: half on item 49
    n_items = 80
    favourite = np.full((10_000, n_items), 0.5 / (n_items - 1))
    favourite[:, 49] = 0.5
    np.save(tmp_path / "favourite.npy", favourite)
    target = f"file:{tmp_path / 'favourite.npy'}"
    result = runner.invoke(
        cli.app,
        [
            *("replay", str(obd_sample), "-p", "uniform", "-p", "fixed:49", "-p", target),
            *("-e", "ips", "-e", "snips", "-e", "dr", "--by-position", "--bootstrap", "0"),
            *("--reward-model", "logistic"),
            *("--json", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "ips@pos" in result.output  # (the table may wrap the long file label)
    figures = json.loads(out.read_text())
    values = {(e["policy"], e["estimator"]): e["value"] for e in figures["evaluations"]}
    clicks, by_position, by_item = _clicks(obd_sample)
    assert figures["log"]["rows_kept"] == len(clicks) == 10_000
    # Every propensity is 1/80 = the uniform target's probability: every weight is 1.
    assert values[("uniform", "ips")] == pytest.approx(np.mean(clicks), rel=1e-12)
    assert values[("uniform", "snips")] == pytest.approx(np.mean(clicks), rel=1e-12)
    # Always showing item 49 is worth 80 times its clicks per row, whatever the position.
    assert values[("fixed:49", "ips")] == pytest.approx(80 * by_item["49"] / len(clicks))
    # The file's policy: 80 x 0.5 on item 49's clicks, 80 x 0.5/79 on the others'.
    others = sum(clicks) - by_item["49"]
    expected = (40 * by_item["49"] + 40 / 79 * others) / len(clicks)
    assert values[(target, "ips")] == pytest.approx(expected, rel=1e-9)
    # The bounded reward model: clicks as probabilities, judged on held-out rows.
    quality = figures["reward_model"]
    assert quality["model"].startswith("HashedLogistic")
    assert quality["metric"] == "log loss"
    assert quality["out_of_range_share"] == 0.0
    # DR (with that model) agrees with IPS within IPS's interval when weights are 1.
    ips = next(e for e in figures["evaluations"] if e["estimator"] == "ips")
    assert ips["ci"]["low"] < values[("uniform", "dr")] < ips["ci"]["high"]
    per_position = [values[("uniform", f"ips@position={k}")] for k in range(3)]
    assert per_position == pytest.approx([np.mean(by_position[k + 1]) for k in range(3)])

    # The page's value: the same figures summed, as IIPS gives it from the Python API.
    logs = read_log(obd_sample, features=False).logs
    uniform = TargetProbabilities(logs, np.full((logs.n, logs.width), 1 / logs.width))
    page = IIPS().estimate(logs, uniform)
    assert page.value == pytest.approx(sum(per_position), rel=1e-12)
    assert [value for _, value in page.by_position] == pytest.approx(per_position, rel=1e-12)
    assert page.ci is not None
    assert page.ci.low < page.value < page.ci.high


def test_replay_by_position_needs_positions(tmp_path: Path) -> None:
    """--by-position on a log without positions is a usage error naming the column."""
    path = tmp_path / "log.jsonl"
    path.write_text('{"actions": ["a", "b"], "chosen": 0, "probability": 0.5, "reward": 1.0}\n')
    result = runner.invoke(
        cli.app, ["replay", str(path), "-p", "uniform", "-e", "ips", "--by-position"]
    )
    assert result.exit_code != 0
    assert "needs each row's `position`" in " ".join(result.output.split())
