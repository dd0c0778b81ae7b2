"""Killed batches (issue #11, item 6): a `crdetect detect --jobs 2` run stopped the ways schedulers and users
stop it (SIGTERM, SIGKILL, Ctrl-C) leaves no worker running, no temporary file, and a summary that lists
every file of the batch; a `--skip-existing` restart keeps what was done.

These run the CLI in a subprocess on a batch long enough to be caught mid-way: the signal is sent as soon
as the first worker has started writing (its temporary file exists), so the assertions do not depend on
how fast the machine is.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads process trees from /proc")

FILES = 6


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> list[Path]:
    """Six 2048 x 2048 frames: a few seconds each for the shipped default model on one thread."""
    folder = tmp_path_factory.mktemp("batch")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(FILES):
        path = folder / f"frame{i}.fits"
        fits.PrimaryHDU(rng.normal(1000, 10, (2048, 2048)).astype(np.float32)).writeto(path)
        paths.append(path)
    return paths


@pytest.fixture
def start():
    """Start `crdetect detect --jobs N` on a batch in a session of its own; whatever still runs at the end
    of the test (an assertion failed mid-batch) is killed with its workers and reaped, so no process or pipe
    outlives the test."""
    started = []

    def launch(batch: list[Path], out: Path, *extra: str, jobs: str = "2") -> subprocess.Popen:
        command = [sys.executable, "-m", "crdetect", "detect", *map(str, batch), "--model", "default", "--jobs",
                   jobs, "--out-dir", str(out), "-q", *extra]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        started.append(process)
        return process

    yield launch
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def _children(pid: int) -> set[int]:
    found = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip()) == pid:
            found.add(int(status.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state  # a zombie has exited


def _wait(predicate, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _mid_batch(process: subprocess.Popen, out: Path, workers: int = 2) -> set[int]:
    """Wait until a worker writes its first output; return the workers' process ids."""
    # an output's temporary file, not summary.csv's (which the parent writes before it starts any worker)
    assert _wait(lambda: out.is_dir() and any(out.glob(".*_crmask.fits.*.tmp"))), "no worker started writing"
    assert process.poll() is None, "the batch ended before it could be interrupted"
    children = _children(process.pid)
    assert len(children) >= workers
    return children


def _summary(out: Path) -> list[dict]:
    with open(out / "summary.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("how, code, jobs", [("SIGTERM", 143, "2"), ("SIGINT", 130, "2"), ("SIGTERM", 143, "1")])
def test_terminated_batch_stops_its_workers_and_writes_the_summary(how, code, jobs, batch, tmp_path, start):
    out = tmp_path / "out"
    process = start(batch, out, jobs=jobs)
    workers = _mid_batch(process, out, workers=int(jobs) if jobs != "1" else 0)
    if how == "SIGINT":  # Ctrl-C in a terminal signals the whole process group
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode == code
    assert _wait(lambda: not any(_alive(pid) for pid in workers), 30), "workers outlived their batch"
    assert not list(out.glob(".*.tmp"))
    rows = _summary(out)
    assert [Path(r["file"]).name for r in rows] == [p.name for p in batch]
    statuses = [r["status"] for r in rows]
    assert set(statuses) <= {"ok", "not processed (interrupted)"} and "not processed (interrupted)" in statuses
    for row in rows:
        assert Path(row["output"]).exists() == (row["status"] == "ok")


def test_killed_batch_leaves_no_workers_and_a_restart_keeps_what_was_done(batch, tmp_path, start):
    out = tmp_path / "out"
    process = start(batch, out)
    workers = _mid_batch(process, out)
    process.kill()  # SIGKILL: no handler runs in the parent
    process.communicate(timeout=60)
    assert _wait(lambda: not any(_alive(pid) for pid in workers), 30), "workers outlived their killed parent"
    assert not list(out.glob(".*.tmp"))  # the workers removed what they were writing
    rows = _summary(out)  # written when the batch started
    assert [Path(r["file"]).name for r in rows] == [p.name for p in batch]
    done_before = {Path(p).name for p in out.glob("*_crmask.fits")}
    assert len(done_before) < FILES

    restart = start(batch, out, "--skip-existing")
    restart.communicate(timeout=600)
    assert restart.returncode == 0
    rows = _summary(out)
    assert [Path(r["file"]).name for r in rows] == [p.name for p in batch]
    for row in rows:
        earlier = Path(row["output"]).name in done_before
        assert row["status"] == ("skipped (output exists)" if earlier else "ok")
        assert row["cr_pixels"] != "" and row["shape"] == "2048x2048"  # earlier rows are not lost
