"""The thin `@hydra.main` shared by every stage: one line for a user mistake, never a traceback."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from threadpoolctl import threadpool_limits

from pipeline.harness import help as _help  # noqa: F401 -- registers the resolvers the --help pages use
from pipeline.harness.paths import CONF_DIR
from pipeline.harness.recording import config_hash
from pipeline.harness.sweep import SWEEP_PID_ENV, finished_before, in_multirun, job_label, say
from pipeline.harness.sweep import interrupted as sweep_interrupted
from pipeline.harness.validate import ConfigError
from pipeline.tracking import StoreError, Terminated, install_signal_handlers, interrupt_outcome, run_counts


def parallel_jobs() -> int:
    """How many jobs of this sweep run at once (1 outside a parallel launcher)."""
    if not in_multirun():
        return 1
    n = HydraConfig.get().launcher.get("n_jobs", 1) or 1
    return (os.cpu_count() or 1) if n < 0 else int(n)


def blas_limit():
    """One share of the cores per parallel job, so BLAS threads of concurrent jobs do not fight."""
    jobs = parallel_jobs()
    if jobs <= 1:
        return contextlib.nullcontext()
    return threadpool_limits(limits=max(1, (os.cpu_count() or 1) // jobs), user_api="blas")


def leave_sigint_to_parent() -> None:
    """Ignore SIGINT in this worker for good: the parent owns Ctrl-C and relays a stop as SIGTERM.

    On a terminal Ctrl-C reaches every process of the group at once; a worker raising KeyboardInterrupt
    on its own lands it anywhere, even in a garbage-collection callback that prints a traceback and goes on.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def sigterm_raises(sigint: bool = True):
    """SIGTERM raises Terminated, SIGINT KeyboardInterrupt (unless `sigint` is False: a worker whose parent
    relays Ctrl-C as SIGTERM) while a stage runs (runs end KILLED).

    Restoring matters in loky workers: loky stops idle workers with SIGTERM, which must stay quiet.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    install_signal_handlers()
    if not sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def stage_main(
    run: Callable[[DictConfig], dict], summary_line: Callable[[dict], str] | None = None, config_name: str = "config"
) -> Callable[[], None]:
    """Wrap a pure `run(cfg) -> dict` as the stage's command-line entry point."""

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
    def main(cfg: DictConfig):
        multirun = in_multirun()
        job = f"job {HydraConfig.get().job.num} ({job_label()}): " if multirun else ""
        if multirun and (previous := finished_before(config_hash(cfg, stage))):  # a resumed sweep: done already
            say(f"already finished: run {previous}", prefix=job)
            return {"status": "skipped", "run_id": previous}
        runs_before = run_counts()
        in_worker = multirun and os.environ.get(SWEEP_PID_ENV, str(os.getpid())) != str(os.getpid())
        if in_worker:
            leave_sigint_to_parent()
        try:
            with blas_limit(), sigterm_raises(sigint=not in_worker):
                result = run(cfg)
        except (KeyboardInterrupt, Terminated) as e:
            if multirun:
                raise
            # the run is already flushed and marked KILLED by its context manager (if one had started); a study
            # says more (a note)
            name = "SIGTERM" if isinstance(e, Terminated) else "SIGINT"
            line = f"interrupted ({name}): {interrupt_outcome(runs_before)}"
            print(getattr(e, "__notes__", [line])[-1], file=sys.stderr)
            sys.exit(143 if isinstance(e, Terminated) else 130)
        except ConfigError as e:
            say(f"error: {job}{e}", err=True)
            if multirun:  # one bad job of a sweep must not stop the others
                return {"status": "invalid", "error": str(e)}
            sys.exit(2)
        except StoreError as e:  # the tracking store cannot be used: its open runs are already ended
            say(f"error: {job}{e}", err=True)
            if multirun:
                return {"status": "failed", "error": str(e)}
            sys.exit(2)
        except Exception as e:
            if not multirun:
                raise
            # the job's run is already marked FAILED with the error; the sweep goes on
            say(f"error: {job}failed: {type(e).__name__}: {e}", err=True)
            return {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        if summary_line is not None:
            text = summary_line(result)
            say(text, prefix=f"{job}\n" if job and "\n" in text else job)
        return result

    module = sys.modules.get(run.__module__)
    spec = getattr(module, "__spec__", None)  # run as `python -m pipeline.train`, the module is __main__
    stage = (spec.name if spec is not None else run.__module__).rsplit(".", 1)[-1]

    @functools.wraps(main)
    def command() -> None:
        """The stage's command: Hydra's app (its --help this stage's own), and a sweep's interrupt as one line."""
        with_help(stage)
        try:
            main()
            return
        except (KeyboardInterrupt, Terminated) as e:
            line = sweep_interrupted(e)  # only a sweep's process gets here (a single run exits above)
            if line is None:
                raise
            print(line, file=sys.stderr)
            code = 143 if isinstance(e, Terminated) else 130
        sys.exit(code)  # outside the except: the traceback no longer holds the launcher's pool (leaked semaphores)

    return command


def with_help(stage: str) -> None:
    """`--help` shows the stage's own page, conf/hydra/help/<stage>.yaml (what it does, which groups apply)."""
    if {"--help", "-h"} & set(sys.argv[1:]) and (CONF_DIR / "hydra" / "help" / f"{stage}.yaml").is_file():
        if not any(a.startswith("hydra/help=") for a in sys.argv[1:]):
            sys.argv.append(f"hydra/help={stage}")
