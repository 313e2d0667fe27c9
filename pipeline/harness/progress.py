"""Progress of many jobs (a study's, a sweep's): a live bar on a terminal, one plain line per finished job otherwise.

`Progress(total, title, mode)`, mode as `study.progress`: `auto` draws tqdm's bar on stderr (jobs done / total,
elapsed, ETA, failed) when stdout and stderr are terminals, and prints one line per finished job on stdout
otherwise (`[12/60] relu he model.depth=20 seed=1 FINISHED 0.8 s (healthy)`; a job that did not finish gets
its line on stderr, with its error); `true` forces the bar, `false` the lines. With the bar, a job that did not
finish still gets its line, written above the bar.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable

from tqdm import tqdm

MODES = ("auto", True, False)
OK = ("FINISHED", "SKIPPED")  # statuses that are not failures
BAR = "{desc}: {n_fmt}/{total_fmt} jobs |{bar:20}| elapsed {elapsed}, ETA {remaining}{postfix}"
BAR_UNKNOWN_TOTAL = "{desc}: {n_fmt} jobs, elapsed {elapsed}{postfix}"
TICK_SECONDS = 1.0  # the bar's clock is redrawn this often between jobs


def use_bar(mode) -> bool:
    """Whether `mode` means the live bar here (auto: stdout and stderr are terminals)."""
    if mode == "auto":
        return sys.stdout.isatty() and sys.stderr.isatty()
    return bool(mode)


def job_line(done: int, total: int | None, label: str, outcome: dict, detail: str = "") -> str:
    """`[12/60] label STATUS 0.8 s (verdict)`, or `...: error` for a job that did not finish, or `...: detail`."""
    status = outcome.get("status", "?")
    line = f"[{done}/{'?' if total is None else total}] {label} {status}"
    if outcome.get("elapsed") is not None:
        line += f" {outcome['elapsed']:.1f} s"
    if outcome.get("error"):
        return f"{line}: {outcome['error']}"
    if detail:
        return f"{line}: {detail}"
    verdict = outcome.get("verdict")
    if verdict:
        line += f" ({verdict if isinstance(verdict, str) else ','.join(verdict)})"
    return line


class Progress:
    """Counts finished jobs and shows them (thread-safe: a sweep's watcher thread reports from the side)."""

    def __init__(self, total: int | None, title: str, mode="auto"):
        self.total, self.title = total, title
        self.done = self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.bar: tqdm | None = None
        if use_bar(mode):
            self.bar = tqdm(
                total=total,
                desc=title,
                unit="job",
                file=sys.stderr,
                leave=False,  # closed, the bar gives its line to the summary (or to the interrupt's one line)
                dynamic_ncols=True,
                smoothing=0,  # ETA from the average job so far: jobs differ in size, the recent ones say less
                bar_format=BAR if total else BAR_UNKNOWN_TOTAL,
            )
            self.bar.set_postfix_str("0 failed", refresh=True)
            threading.Thread(target=self._tick, name="progress-clock", daemon=True).start()

    def _tick(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            with self._lock:
                if self.bar is not None:
                    self.bar.refresh()

    def job_done(self, label: str, outcome: dict, lines: Iterable[tuple[str, str]] = (), detail: str = "") -> None:
        """One more job ended with `outcome` ({"status", "elapsed", "verdict" or "error"}).

        `lines`: what the job itself had to say, as (stream, text) pairs ("stdout"/"stderr"), shown first.
        """
        with self._lock:
            if outcome.get("status") == "SKIPPED":  # done before (a resumed sweep): not counted, not timed
                self.total = None if self.total is None else self.total - 1
                if self.bar is not None:
                    self.bar.total = self.total
                else:
                    print(job_line(0, None, label, outcome, detail).replace("[0/?]", "[-]", 1), flush=True)
                return
            self.done += 1
            ok = outcome.get("status") in OK
            self.failed += not ok
            line = job_line(self.done, self.total, label, outcome, detail)
            if self.bar is None:  # a job that did not finish: its line where errors go
                for stream, text in lines:
                    print(text, file=sys.stderr if stream == "stderr" else sys.stdout, flush=True)
                print(line, file=sys.stdout if ok else sys.stderr, flush=True)
                return
            for stream, text in lines:
                if stream == "stderr":
                    self.bar.write(text, file=sys.stderr)
            if not ok:
                self.bar.write(line, file=sys.stderr)
            self.bar.set_postfix_str(f"{self.failed} failed", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        """Clear the bar (idempotent): whatever prints next starts on a clean line."""
        self._stop.set()
        with self._lock:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
