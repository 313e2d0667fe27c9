"""Progress of studies and sweeps: a live bar on a terminal (faked with a pty), a line per finished job
otherwise, as each job ends (results still in the jobs' order); Ctrl-C ends with one line, and the same
command again resumes (a sweep too)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.harness import dispatch as dispatch_module
from pipeline.harness import progress as progress_module
from pipeline.harness.progress import Progress, job_line
from pipeline.harness.sweep import sweep_size
from pipeline.harness.validate import ConfigError
from tests.helpers import cli, config, tmp_store

TINY = ("data=xor", "model.depth=1", "model.width=4", "train.epochs=1", "tracking=off")


def on_a_terminal(argv: list[str], stop_when: str | None = None, timeout: float = 120) -> tuple[int, str]:
    """Run argv on a pseudo-terminal 110 columns wide (stdout and stderr a terminal, as a user's shell has
    them); type Ctrl-C once the output matches `stop_when`. The exit code and everything the terminal got."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: cwd is the project's (pytest's), the venv's python
        os.execvp(argv[0], argv)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 110, 0, 0))
    out, sent, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if stop_when and not sent and re.search(stop_when, out.decode(errors="replace")):
                os.write(fd, b"\x03")  # Ctrl-C, as typed: the terminal sends SIGINT to the whole foreground group
                sent = True
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def children(pid: int) -> list[int]:
    """The pids of a process's children (from /proc: the workers a launcher started)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def screen(raw: str) -> list[str]:
    """What the terminal shows at the end: each line as its last carriage return left it."""
    return [line.rstrip("\r").split("\r")[-1].rstrip() for line in raw.split("\n")]


def test_a_line_per_finished_job_off_a_terminal(capsys):
    with Progress(3, "study depth (default)", "auto") as progress:  # pytest captures: not a terminal
        assert progress.bar is None
        progress.job_done(
            "relu he model.depth=20 seed=1", {"status": "FINISHED", "elapsed": 0.83, "verdict": ["healthy"]}
        )
        progress.job_done("huge", {"status": "FAILED", "elapsed": 0.1, "error": "MemoryError: no room"})
        progress.job_done("earlier", {"status": "SKIPPED"}, detail="already finished: run abc")
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "[1/3] relu he model.depth=20 seed=1 FINISHED 0.8 s (healthy)",
        "[-] earlier SKIPPED: already finished: run abc",
    ]
    assert err.splitlines() == ["[2/3] huge FAILED 0.1 s: MemoryError: no room"]  # a job that did not finish
    assert (progress.done, progress.failed, progress.total) == (2, 1, 2)  # a skipped job is not one to wait for


def test_the_bar_counts_jobs_failures_elapsed_and_eta_and_is_cleared(capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "TICK_SECONDS", 0.05)
    progress = Progress(4, "sweep", True)
    progress.job_done("a", {"status": "FINISHED", "elapsed": 1.0})
    progress.job_done("b", {"status": "FAILED", "elapsed": 1.0, "error": "ValueError: x"})
    time.sleep(0.2)  # the clock ticks between jobs
    progress.close()
    progress.close()  # twice is fine (an interrupt, then the end)
    out, err = capsys.readouterr()
    assert out == ""
    drawn = [part for part in err.split("\r") if part.strip()]
    last = drawn[-1]  # the bar as last drawn, before the line that clears it
    assert re.search(r"sweep: 2/4 jobs \|.*\| elapsed 00:0\d, ETA \d\d:\d\d, 1 failed", last), last
    assert "b FAILED 1.0 s: ValueError: x\n" in err  # written above the bar
    assert err.endswith("\r") and err.split("\r")[-2].strip() == ""  # cleared: the next line starts clean


def test_auto_means_the_bar_only_when_stdout_and_stderr_are_terminals(monkeypatch):
    for out_tty, err_tty, bar in ((True, True, True), (False, True, False), (True, False, False)):
        monkeypatch.setattr(sys.stdout, "isatty", lambda v=out_tty: v, raising=False)
        monkeypatch.setattr(sys.stderr, "isatty", lambda v=err_tty: v, raising=False)
        assert progress_module.use_bar("auto") is bar
    assert progress_module.use_bar(True) and not progress_module.use_bar(False)


def test_job_line_reads_as_the_issue_asks():
    outcome = {"status": "FINISHED", "elapsed": 0.8, "verdict": ["not_learning", "vanishing"]}
    assert (
        job_line(12, 60, "sigmoid d20 s1", outcome) == "[12/60] sigmoid d20 s1 FINISHED 0.8 s (not_learning,vanishing)"
    )
    assert job_line(1, None, "x", {"status": "INVALID", "error": "bad"}) == "[1/?] x INVALID: bad"


def test_study_progress_is_validated_before_anything_runs(tmp_path):
    from pipeline import study

    cfg = config(
        "study=depth", "study.size=smoke", "study.progress=sometimes", f"tracking.uri={tmp_store(tmp_path)}", hydra=True
    )
    with pytest.raises(ConfigError, match="study.progress: got 'sometimes'"):
        study.run(cfg)
    assert not (tmp_path / "mlruns").exists()


def test_in_process_jobs_are_reported_as_they_end():
    jobs = [config(*TINY, "seed=0"), config(*TINY, "seed=1")]
    seen = []
    outcomes = dispatch_module.dispatch("train", jobs, 1, None, on_done=lambda i, o: seen.append((i, o["status"])))
    assert seen == [(0, "FINISHED"), (1, "FINISHED")]
    assert [o["status"] for o in outcomes] == ["FINISHED", "FINISHED"] and all(o["elapsed"] > 0 for o in outcomes)


def test_sweep_size_counts_the_jobs_of_the_overrides():
    assert sweep_size(["model.activation=sigmoid,tanh,relu", "init=xavier_uniform,he_normal", "model.depth=8"]) == 6
    assert sweep_size(["seed=range(0,4)", "model.depth=2"]) == 4
    assert sweep_size(["model.depth=2"]) == 1
    assert sweep_size(["optimizer.lr=interval(0.1,1.0)"]) is None  # not a list: unknown


@pytest.mark.slow
def test_loky_jobs_are_reported_as_they_end_and_returned_in_order():
    jobs = [config(*TINY, "train.epochs=300", "probes.every=1"), config(*TINY)]  # the first job is the slow one
    seen = []
    outcomes = dispatch_module.dispatch("train", jobs, 2, 1, on_done=lambda i, o: seen.append(i))
    assert seen == [1, 0]  # the quick job was reported first...
    assert outcomes[0]["elapsed"] > outcomes[1]["elapsed"]  # ... and the outcomes keep the jobs' order


@pytest.mark.slow
def test_dask_jobs_are_reported_as_they_end():
    pytest.importorskip("distributed", reason="needs the [dist] extra: pip install -e '.[dist]'")
    jobs = [config(*TINY, "train.epochs=300", "probes.every=1"), config(*TINY)]
    seen = []
    outcomes = dispatch_module.dispatch_dask("train", jobs, 2, 1, on_done=lambda i, o: seen.append(i))
    assert sorted(seen) == [0, 1] and seen[0] == 1
    assert outcomes[0]["elapsed"] > outcomes[1]["elapsed"]


STUDY = ("study=dead_relu", "study.size=smoke")


@pytest.mark.slow
def test_a_study_off_a_terminal_prints_a_line_per_finished_job(tmp_path):
    proc = cli("study", *STUDY, f"tracking.uri={tmp_store(tmp_path)}", f"+study.reports_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "study dead_relu (smoke): 3 jobs, 3 to run on 2 loky worker(s)"
    jobs = [line for line in lines if line.startswith("[")]
    assert [j.split("]")[0] for j in jobs] == ["[1/3", "[2/3", "[3/3"]
    assert all(re.fullmatch(r"\[\d/3\] .+ FINISHED \d+\.\d s \(.+\)", j) for j in jobs), jobs
    assert "jobs |" not in proc.stderr  # no bar
    again = cli("study", *STUDY, f"tracking.uri={tmp_store(tmp_path)}", f"+study.reports_dir={tmp_path}")
    assert again.stdout.splitlines()[0] == "study dead_relu (smoke): 3 jobs, 3 already finished, none to run"


@pytest.mark.slow
def test_a_study_on_a_terminal_draws_the_bar_and_ctrl_c_ends_with_one_line(tmp_path):
    store = tmp_store(tmp_path)
    argv = [
        sys.executable,
        "-m",
        "pipeline.study",
        "study=depth",
        f"tracking.uri={store}",
        f"+study.reports_dir={tmp_path}",
    ]
    code, raw = on_a_terminal(argv, stop_when=r"study depth \(default\): [3-9]/60 jobs")
    assert code == 130, raw
    assert re.search(r"study depth \(default\): \d+/60 jobs \|.*\| elapsed 00:\d\d, ETA \d\d:\d\d, 0 failed", raw)
    assert "[1/60]" not in raw  # the bar, not the lines
    shown = [line for line in screen(raw) if line.strip()]
    assert shown[0] == "study depth (default): 60 jobs, 60 to run on 2 loky worker(s)"
    # the bar cleared, then one line: how many finished, and that the same command resumes
    assert re.fullmatch(
        r"(\^C)?study depth \(default\) interrupted \(SIGINT\): (\d+) of 60 jobs finished, the rest marked KILLED; "
        r"running the same command again resumes",
        shown[-1],
    ), shown[-3:]
    assert len(shown) == 2 and "Traceback" not in raw, shown
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = int(re.search(r"\): (\d+) of 60", shown[-1]).group(1))
    assert sum(r.info.status == "FINISHED" for r in runs) == finished >= 3


SWEEP = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "train.epochs=1,150", "model.activation=relu,tanh")
SWEEP_TINY = ("data=xor", "model.depth=1", "model.width=4", "probes.every=1")


@pytest.mark.slow
def test_a_sweep_shows_the_bar_ends_a_ctrl_c_with_one_line_and_resumes(tmp_path):
    store = tmp_store(tmp_path)
    args = [*SWEEP, *SWEEP_TINY, f"tracking.uri={store}"]
    argv = [sys.executable, "-m", "pipeline.train", "-m", *args, f"hydra.sweep.dir={tmp_path}/first"]
    code, raw = on_a_terminal(argv, stop_when=r"sweep: 2/4 jobs")  # the two 1-epoch jobs are done
    assert code == 130, raw
    shown = [line for line in screen(raw) if line.strip()]
    assert shown[0] == f"sweep: 4 jobs, output in {tmp_path}/first"  # and no [HYDRA] launcher lines
    assert re.search(r"sweep: 2/4 jobs \|.*\| elapsed 00:\d\d, ETA \d\d:\d\d, 0 failed", raw)
    assert re.fullmatch(
        r"(\^C)?sweep interrupted \(SIGINT\): 2 of 4 jobs finished, the rest marked KILLED; "
        "running the same command again resumes",
        shown[-1],
    ), shown
    assert len(shown) == 2 and "Traceback" not in raw, shown
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    statuses = [r.info.status for r in runs]
    assert statuses.count("FINISHED") == 2 and "RUNNING" not in statuses, statuses
    assert [r.info.status for r in runs if r.data.tags.get("stage") == "sweep"] == ["KILLED"]
    # the 150-epoch jobs: KILLED, or not started yet when Ctrl-C came (a job opens its run after its imports)
    stopped = statuses.count("KILLED") - 1

    again = cli("train", "-m", *args, f"hydra.sweep.dir={tmp_path}/second")  # the same command; not a terminal
    assert again.returncode == 0, again.stderr
    skipped = [line for line in again.stdout.splitlines() if line.startswith("[-]")]
    assert len(skipped) == 2 and all("train.epochs=1 " in s and "SKIPPED" in s for s in skipped), again.stdout
    ran = [line for line in again.stdout.splitlines() if re.match(r"\[\d/2\]", line)]
    assert len(ran) == 2 and all("train.epochs=150" in r and "FINISHED" in r for r in ran), again.stdout
    assert "sweep: 4 runs under parent run" in again.stdout and "4 FINISHED" in again.stdout
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("stage") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # reopened, not a second parent
    assert "error" not in parents[0].data.tags  # no longer says it was interrupted
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert len(killed) == stopped and all(r.data.tags.get("superseded") == "true" for r in killed)
    assert len(runs) == 5 + stopped  # the parent, 2 finished before, `stopped` killed, 2 finished now


@pytest.mark.slow
def test_a_sweep_interrupted_by_sigterm_leaves_nothing_running(tmp_path):
    import subprocess

    store = tmp_store(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.train", "-m", *SWEEP[:2], "train.epochs=100000", "model.activation=relu,tanh",
         *SWEEP_TINY, f"tracking.uri={store}", f"hydra.sweep.dir={tmp_path}/s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        client = MlflowClient(store)
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
            except Exception:  # not created yet
                continue
            if sum(r.info.status == "RUNNING" for r in runs) == 3:  # the parent and both jobs
                break
        workers = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:  # whatever failed: nothing left running, no pipe held open by an orphaned worker
        for pid in [proc.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=10)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == (
        "sweep interrupted (SIGTERM): 0 of 2 jobs finished, the rest marked KILLED; "
        "running the same command again resumes"
    )  # the last line: no "leaked semaphore" warning after it
    assert "Traceback" not in err
    assert len(workers) >= 2 and not [pid for pid in workers if alive(pid)]  # no worker left training, orphaned
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.info.status for r in runs) == ["KILLED"] * 3
