"""The team tracking server (`python -m pipeline.tracking.team`): MLflow on PostgreSQL, started from a folder;
a Dask study logging to it end to end; runs left RUNNING by a killed writer found and ended (`reap`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline import tracking
from pipeline.tracking import team
from pipeline.tracking.runs import WRITER_TAG
from tests.helpers import cli, free_port, tmp_store


def _postgres_missing() -> str | None:
    try:
        team.pg_bin("pg_ctl")
    except team.TeamError as e:
        return str(e)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the postgres extra (psycopg) is not installed: pip install -e '.[postgres]'"
    return None


# a writer that logs until it is killed: its run stays RUNNING (nothing can end it)
WRITER = textwrap.dedent(
    """
    import sys, time
    from pipeline import tracking
    run = tracking.TrackedRun(sys.argv[1], "reap", run_name="writer").start()
    print(run.run_id, flush=True)
    step = 0
    while True:
        run.log_metrics({"x": float(step)}, step)
        run.flush()
        step += 1
        time.sleep(0.05)
    """
)


def start_writer(uri: str) -> tuple[subprocess.Popen, str]:
    """A writer process and its run id (once the run exists)."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, uri], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


@pytest.mark.slow
def test_a_run_whose_writer_was_killed_is_ended_by_the_reaper_and_a_live_one_is_not(tmp_path):
    uri = tmp_store(tmp_path)
    killed, killed_id = start_writer(uri)
    alive, alive_id = start_writer(uri)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        client = MlflowClient(uri)
        assert client.get_run(killed_id).info.status == "RUNNING"  # nothing ended it
        writer = client.get_run(killed_id).data.tags[WRITER_TAG]
        assert writer.split(":")[1] == str(killed.pid)
        other_host = tracking.TrackedRun(uri, "reap", run_name="elsewhere").start()
        client.set_tag(other_host.run_id, WRITER_TAG, "another-host:1:0.00")  # not ours to judge
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.tracking.team", "reap", "--uri", uri], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"1 run(s) left RUNNING by a writer that is gone marked KILLED: {killed_id}"
        run = client.get_run(killed_id)
        assert run.info.status == "KILLED" and run.data.tags["ended_by"].startswith("reaper: its writer process")
        assert client.get_run(alive_id).info.status == "RUNNING"  # its writer still logs
        assert client.get_run(other_host.run_id).info.status == "RUNNING"
    finally:
        alive.kill()
        alive.wait(10)


def test_a_run_whose_writer_pid_is_dead_is_reaped_with_its_reason(tmp_path):
    uri = tmp_store(tmp_path)
    run = tracking.TrackedRun(uri, "reap", run_name="orphan").start()
    done = subprocess.Popen(["true"])
    done.wait()  # a pid that no longer runs
    host, _, started = MlflowClient(uri).get_run(run.run_id).data.tags[WRITER_TAG].split(":")
    MlflowClient(uri).set_tag(run.run_id, WRITER_TAG, f"{host}:{done.pid}:{started}")
    mine = tracking.TrackedRun(uri, "reap", run_name="mine").start()  # this process: alive
    assert tracking.end_orphaned_runs(uri) == [run.run_id]
    ended = MlflowClient(uri).get_run(run.run_id)
    assert ended.info.status == "KILLED" and f":{done.pid}:" in ended.data.tags["ended_by"]
    assert MlflowClient(uri).get_run(mine.run_id).info.status == "RUNNING"
    assert tracking.end_orphaned_runs(uri) == []  # once


def test_a_reused_pid_is_another_process(tmp_path):
    uri = tmp_store(tmp_path)
    run = tracking.TrackedRun(uri, "reap", run_name="old").start()
    host, pid, started = MlflowClient(uri).get_run(run.run_id).data.tags[WRITER_TAG].split(":")
    assert int(pid) == os.getpid()
    MlflowClient(uri).set_tag(run.run_id, WRITER_TAG, f"{host}:{pid}:{float(started) - 3600:.2f}")  # an hour older
    assert tracking.end_orphaned_runs(uri) == [run.run_id]


def test_missing_postgresql_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(team.shutil, "which", lambda name: None)
    monkeypatch.setattr(team, "PG_GLOB", "/nonexistent/postgresql/*/bin")
    assert team.main(["start", "--dir", str(tmp_path / "team")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: PostgreSQL is not installed (pg_ctl is neither on PATH nor in /nonexistent/postgresql/*/bin): "
        "apt-get install postgresql (Debian/Ubuntu), or your system's package"
    ]
    assert not (tmp_path / "team").exists()  # said before anything was made


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_team_folder_that_cannot_be_made_is_one_line_and_exit_2(backend, capsys):
    if backend == "postgres" and team.shutil.which("pg_ctl") is None and not list(Path("/").glob(team.PG_GLOB[1:])):
        pytest.skip("PostgreSQL is not installed: its own line comes first")
    assert team.main(["start", "--backend", backend, "--dir", "/proc/no-such-folder/team"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --dir /proc/no-such-folder/team: cannot be made or written (No such file or directory)"]


def test_a_folder_postgresql_cannot_reach_under_root_is_one_line_before_initdb(tmp_path):
    """Run as root, PostgreSQL runs as `postgres`: a clone under /root (mode 0700) cannot hold its cluster."""
    import pwd

    if os.geteuid() != 0:
        pytest.skip("only root hands the cluster to the postgres user")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user (PostgreSQL is not installed)")
    private = tmp_path / "private"
    (private / "team").mkdir(parents=True)
    private.chmod(0o700)
    with pytest.raises(team.TeamError) as refused:
        team.reachable(private / "team")
    assert str(refused.value) == (
        f"PostgreSQL runs as the `postgres` user, which cannot reach {private / 'team'} ({private} is private: "
        "mode 700): start it with --dir in a folder it can reach (e.g. --dir /srv/gradlab-team), or clone the "
        "project there"
    )


@pytest.fixture(scope="module")
def team_server():
    """MLflow on PostgreSQL, from `python -m pipeline.tracking.team start`; always stopped."""
    if reason := _postgres_missing():
        pytest.skip(reason)
    # run as root, PostgreSQL runs as `postgres`: its folder must be reachable (pytest's tmp root is 0700)
    folder = Path(tempfile.mkdtemp(prefix="gradlab-team-"))
    folder.chmod(0o755)
    args = ["--dir", str(folder), "--port", str(free_port()), "--pg-port", str(free_port()), "--workers", "2"]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.tracking.team", "start", *args], capture_output=True, text=True
    )
    started = time.perf_counter() - t0
    try:
        assert proc.returncode == 0, proc.stderr
        yield proc.stdout, args, folder, started
    finally:
        subprocess.run([sys.executable, "-m", "pipeline.tracking.team", "stop", *args], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def _url(args: list[str]) -> str:
    return f"http://127.0.0.1:{args[args.index('--port') + 1]}"


@pytest.mark.slow
def test_team_server_starts_on_postgresql_and_says_how_to_log(team_server):
    out, args, folder, started = team_server
    url = _url(args)
    assert out.strip().startswith(f"team server: {url} (MLflow on PostgreSQL at 127.0.0.1:")
    assert out.strip().endswith(f"log with: tracking=server tracking.uri={url}")
    assert started < 90
    assert (folder / "pg" / "PG_VERSION").is_file() and (folder / "pgpass").stat().st_mode & 0o077 == 0
    status = subprocess.run(
        [sys.executable, "-m", "pipeline.tracking.team", "status", *args], capture_output=True, text=True
    )
    assert "MLflow answering; PostgreSQL" in status.stdout and status.stdout.strip().endswith("running")
    again = subprocess.run(
        [sys.executable, "-m", "pipeline.tracking.team", "start", *args], capture_output=True, text=True
    )
    assert again.returncode == 0 and again.stdout == out  # idempotent: nothing started twice


@pytest.mark.slow
def test_a_dask_study_logs_every_run_to_the_postgresql_server(team_server, tmp_path):
    pytest.importorskip("distributed", reason="needs the [dist] extra: pip install -e '.[dist]'")
    _, args, folder, _ = team_server
    url = _url(args)
    proc = cli(
        "study",
        "study=dead_relu",
        "study.size=smoke",
        "study.backend=dask",
        "study.n_jobs=2",
        "tracking=server",
        f"tracking.uri={url}",
        "tracking.experiment=team-dask",
        f"+study.reports_dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("team-dask/dead_relu")  # a study's own experiment
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("stage") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 3
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(client.get_metric_history(c.info.run_id, "train/loss") for c in children)
    # the artifacts went through the server into its folder
    assert list((folder / "artifacts").rglob("summary.md"))


@pytest.mark.slow
def test_load_benchmark_loses_nothing_on_every_setup_at_a_tiny_size(team_server):
    from benchmarks import tracking_load

    _, args, _, _ = team_server
    rows = [{"setup": "server-postgres", **tracking_load.load(_url(args), 4, 3, 5, 4)}]
    assert rows[0]["values_written"] == 4 * 3 * 5 * 4
    assert rows[0]["values_lost"] == 0 and rows[0]["runs_failed"] == rows[0]["runs_running"] == 0
    assert "| server-postgres | 4 | 240 |" in tracking_load.markdown(rows)


@pytest.mark.slow
def test_load_benchmark_with_train_runs_as_writers_loses_nothing(team_server, tmp_path):
    from benchmarks import tracking_load

    _, args, _, _ = team_server
    row = tracking_load.train_load(_url(args), 2, tmp_path)
    assert row["exit_nonzero"] == 0 and not row["writer_errors"], row
    assert row["values_written"] > 0 and row["values_lost"] == row["values_extra"] == 0, row
    assert row["runs_failed"] == row["runs_running"] == row["runs_missing"] == 0, row
    off = tracking_load.train_load(None, 2, tmp_path)
    table = tracking_load.train_markdown([{"setup": "off", **off}, {"setup": "server-postgres", **row}])
    assert f"| server-postgres | 2 | {row['seconds']} | {row['seconds'] / off['seconds']:.2f}x |" in table


# a writer that logs 30 batches over ~9 s, then says what it wrote (or the one line that stopped it)
STEADY_WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pipeline import tracking
    out = {"written": 0, "error": None}
    try:
        with tracking.TrackedRun(sys.argv[1], "faults", run_name="steady") as run:
            run.start()
            out["run_id"] = run.run_id
            print(json.dumps(out), flush=True)
            for b in range(30):
                run.log_metrics({f"k{k}": float(b + k) for k in range(10)}, b)
                run.flush()
                out["written"] += 10
                time.sleep(0.3)
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
    print(json.dumps(out), flush=True)
    """
)


def _steady_writer(url: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", STEADY_WRITER, url], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())["run_id"]


def _outcome(proc: subprocess.Popen, url: str, run_id: str, budget: float) -> tuple[dict, str, int, float]:
    """What the writer said, its run's status, values read back, and how long it took to end after the fault."""
    t0 = time.perf_counter()
    out, _ = proc.communicate(timeout=budget)
    ended_after = time.perf_counter() - t0
    said = json.loads(out.strip().splitlines()[-1])
    client = MlflowClient(url)
    found = sum(len(client.get_metric_history(run_id, f"k{k}")) for k in range(10))
    return said, client.get_run(run_id).info.status, found, ended_after


@pytest.mark.slow
def test_writers_ride_out_a_server_restart_and_a_postgresql_restart(team_server):
    """The MLflow server restarted, then PostgreSQL restarted, while a writer logs: it finishes with nothing
    lost (its client retries), or fails with one line; it never hangs."""
    _, args, folder, _ = team_server
    url = _url(args)
    t = team.Team(
        folder, port=int(args[args.index("--port") + 1]), pg_port=int(args[args.index("--pg-port") + 1]), workers=2
    )
    for fault in ("server", "postgres"):
        proc, run_id = _steady_writer(url)
        time.sleep(2)
        if fault == "server":
            team.stop_mlflow(t)
            time.sleep(1)
            team.start_mlflow(t)
        else:
            team.stop_postgres(t)
            time.sleep(3)
            team.start_postgres(t)
        said, status, found, seconds = _outcome(proc, url, run_id, budget=180)
        print(f"{fault} restart: {said}, status {status}, {found} read back, ended {seconds:.1f} s after")
        if said["error"] is None:
            assert status == "FINISHED" and said["written"] == found == 300, (fault, said, status, found)
        else:  # a clean failure: one line, the run not left RUNNING
            assert "\n" not in said["error"] and status in ("FAILED", "KILLED"), (fault, said, status)


@pytest.mark.parametrize("uri", ["/nope", "http://127.0.0.1:1"])
def test_reap_on_a_store_that_cannot_be_used_is_one_line_and_exit_2(uri, capsys):
    assert team.main(["reap", "--uri", uri]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: tracking.uri: {'got ' if uri == '/nope' else uri}")


def test_after_the_store_failed_a_runs_later_calls_get_one_short_try(tmp_path, monkeypatch):
    """The bounded retries are spent once per run: a stage saving its history on the way out after a failed flush
    does not wait for them a second time (a train run ended 66 s after PostgreSQL stopped, now 33 s)."""
    from mlflow.exceptions import MlflowException

    run = tracking.TrackedRun(tmp_store(tmp_path), "fast", run_name="r").start()
    seen = []

    def refused(*args, **kwargs):
        seen.append(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES"))
        raise MlflowException("API request to http://x failed with exception Max retries exceeded (Connection refused)")

    monkeypatch.setattr(run._store, "log_batch", refused)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    raised = []
    for _ in range(2):
        run.log_metrics({"x": 1.0}, 0)
        with pytest.raises(tracking.StoreError, match="stopped answering") as failed:
            run.flush()
        raised.append(failed.value)
    assert seen == ["5", "0"]
    assert raised[1] is raised[0]  # the line names the first failure (it had the full retries and timeout)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"  # restored


# a train run long enough to be logging when the fault comes (digits, probes on: a flush every ~20 epochs)
LONG_TRAIN = ("data=digits", "train.epochs=3000", "tracking=server")
# The client's bound: 6 tries with waits of 0+2+4+8+16 s (+ up to 1 s jitter each), each try up to 20 s when the
# server does not reply (with PostgreSQL down, MLflow's server answers 503 at first, then some requests hang: it
# retries creating a database engine for minutes), then the fail-fast end (5 s): about 155 s at most.
FOR_GOOD_SECONDS = 170


def _wait_for_runs(url: str, experiment: str, n: int, procs: list[subprocess.Popen], budget: float = 180) -> None:
    """Until `experiment` holds n runs (every writer logging)."""
    client = MlflowClient(url)
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        found = client.get_experiment_by_name(experiment)
        if found is not None and len(client.search_runs([found.experiment_id])) >= n:
            return
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.3)
    raise AssertionError(f"{n} runs not created within {budget} s")


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["postgres", "server"])
def test_writers_end_in_one_line_when_the_store_stops_for_good_and_reap_ends_their_runs(team_server, fault, tmp_path):
    """PostgreSQL (or the MLflow server) stopped and not restarted while two train runs and a steady writer log:
    each ends within the client's bounded retries, exit 2 and one line, never hangs; what was acknowledged is in
    the store, whole batches, with at most the batch in flight. Their runs could not be ended in a store that was
    down: back up, they are RUNNING, and `team reap` marks them KILLED with an `ended_by` tag."""
    _, args, folder, _ = team_server
    url = _url(args)
    t = team.Team(
        folder, port=int(args[args.index("--port") + 1]), pg_port=int(args[args.index("--pg-port") + 1]), workers=2
    )
    experiment = f"for-good-{fault}"
    trains = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.train",
                *LONG_TRAIN,
                f"tracking.uri={url}",
                f"tracking.experiment={experiment}",
                f"seed={seed}",
                f"hydra.run.dir={tmp_path / str(seed)}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (0, 1)
    ]
    steady = None
    try:
        _wait_for_runs(url, experiment, 2, trains)
        steady, steady_id = _steady_writer(url)  # ~9 s of batches: the fault lands in the middle
        time.sleep(1)  # every writer past its first flush
        (team.stop_postgres if fault == "postgres" else team.stop_mlflow)(t)
        t0 = time.perf_counter()
        errs, seconds = [], []
        for proc in trains:
            _, err = proc.communicate(timeout=FOR_GOOD_SECONDS + 60)  # a hang fails here, not forever
            errs.append((proc.returncode, err))
            seconds.append(time.perf_counter() - t0)
        out, _ = steady.communicate(timeout=FOR_GOOD_SECONDS + 60)
        seconds.append(time.perf_counter() - t0)
        said = json.loads(out.strip().splitlines()[-1])
    finally:
        for proc in (*trains, steady):
            if proc is not None and proc.poll() is None:
                proc.kill()
        (team.start_postgres if fault == "postgres" else team.start_mlflow)(t)  # back: the other tests need it
    for code, err in errs:
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith(f"error: tracking.uri: {url} stopped answering ("), err
        assert err.strip().endswith(") and stays RUNNING"), err
        if fault == "server":
            assert "(connection refused); run " in err, err
    assert said["error"] is not None and "\n" not in said["error"], said
    assert max(seconds) < FOR_GOOD_SECONDS, seconds

    client = MlflowClient(url)
    found = client.get_experiment_by_name(experiment)
    runs = {r.info.run_id: r for r in client.search_runs([found.experiment_id])}
    runs[steady_id] = client.get_run(steady_id)
    before = {run_id: r.info.status for run_id, r in runs.items()}
    assert set(before.values()) == {"RUNNING"}, before  # no store to mark them in while it was down
    # nothing half-written: the steady writer's acknowledged batches, whole; and at most the one batch in flight
    # when the store went (committed, its reply lost: measured once in three PostgreSQL stops)
    found = sum(len(client.get_metric_history(steady_id, f"k{k}")) for k in range(10))
    assert found % 10 == 0 and 0 < said["written"] <= found <= said["written"] + 10, (found, said)
    reaped = subprocess.run(
        [sys.executable, "-m", "pipeline.tracking.team", "reap", "--uri", url], capture_output=True, text=True
    )
    assert reaped.returncode == 0, reaped.stderr
    assert set(runs) <= set(reaped.stdout.strip().rsplit(": ", 1)[1].split(", ")), reaped.stdout
    after = {run_id: client.get_run(run_id) for run_id in runs}
    assert all(r.info.status == "KILLED" for r in after.values())
    assert all(r.data.tags["ended_by"].startswith("reaper: its writer process") for r in after.values())
    print(
        f"{fault} stopped for good: writers ended {', '.join(f'{s:.1f}' for s in seconds)} s after; "
        f"runs {sorted(set(before.values()))} -> KILLED by reap; steady writer {said['written']} values acknowledged, "
        f"{found} read back"
    )


def test_the_load_test_counts_what_a_train_run_promised_mlflow_and_finds_a_missing_value(tmp_path, monkeypatch):
    """expected_counts, from a real run's history.json, matches every metric's history in the store value for value
    (the dense series strided to 8 points and their last, the rest whole); a value the store lacks is counted lost."""
    from benchmarks import tracking_load
    from pipeline import train
    from tests.helpers import config

    uri = tmp_store(tmp_path)
    overrides = [a.replace("train.epochs=30", "train.epochs=12") for a in tracking_load.TRAIN_ARGS]
    train.run(config(*overrides, f"tracking.uri={uri}", "tracking.experiment=counted"))
    row = tracking_load.train_read_back(uri, "counted", 1)
    assert row["values_lost"] == row["values_extra"] == 0 and row["runs_failed"] == row["runs_running"] == 0
    assert row["values_written"] == row["values_read_back"] < row["history_values"]  # strided: fewer than measured
    promised = tracking_load.expected_counts
    monkeypatch.setattr(tracking_load, "expected_counts", lambda h, e: {**promised(h, e), "train/loss": 99})
    assert tracking_load.train_read_back(uri, "counted", 1)["values_lost"] > 0


def test_render_keeps_the_old_results_layout_and_writes_both_tables_and_the_findings(tmp_path):
    """`--mode render`: the section again from the JSON (an older file's top-level rows are the synthetic ones)."""
    from benchmarks import tracking_load

    synthetic = {"setup": "local", "writers": 4, "values_written": 8, "values_lost": 0, "seconds": 1.0}
    synthetic.update(values_per_second=8, batch_p50_ms=1.0, batch_p99_ms=2.0, runs_failed=0, runs_running=0)
    old = {"date": "d", "note": "n", "batches": 1, "keys": 2, "steps": 4, "rows": [synthetic]}
    results, md = tmp_path / "load.json", tmp_path / "B.md"
    results.write_text(json.dumps(old))
    md.write_text(f"# Benchmarks\n\n{tracking_load.BEGIN}\nstale\n{tracking_load.END}\n\n## after\n")
    off = {"setup": "off", "writers": 4, "seconds": 10.0, "run_p50_s": 9.0, "run_max_s": 10.0, "exit_nonzero": 0}
    local = {**off, "setup": "local", "seconds": 15.0, "values_written": 100, "values_per_second": 7}
    local.update(runs_failed=0, runs_running=0, values_lost=0, values_extra=0)
    data = tracking_load.previous(results)
    data.update(train={"date": "t", "note": "m", "args": ["data=xor"], "rows": [off, local]}, findings=["why"])
    results.write_text(json.dumps(data))
    tracking_load.main(["--mode", "render", "--out", str(results), "--markdown", str(md)])
    text = md.read_text()
    assert "stale" not in text and text.endswith("<!-- end of tracking load -->\n## after\n")
    assert "| local | 4 | 8 | 1.0 | 8 | 1.0 | 2.0 | 0 | 0 | 0 |" in text
    assert "| local | 4 | 15.0 | 1.50x | 9.0 | 10.0 | 100 | 7 | 0 | 0 | 0 | 0 | 0 |" in text
    assert "| off | 4 | 10.0 | - |" in text and text.count("- why") == 1
    assert json.loads(results.read_text())["synthetic"]["rows"] == [synthetic]  # kept, in the new layout
