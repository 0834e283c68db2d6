"""`hookline serve --workers N`: N server processes on one port, one supervisor.

The supervisor binds the listening socket once and hands it to every worker (each is a
fresh `hookline serve` process given the socket's descriptor; anycorn serves it through
an `fd://` bind). Why one shared socket rather than SO_REUSEPORT (a socket per worker):
- the address is checked once, in one line, before any worker starts; port 0 works;
- a worker that drains, crashes or restarts takes no connection with it: with
  SO_REUSEPORT the kernel drops the connections queued on a closing socket, and hashes
  new ones to it until it is gone; a shared queue is served by whoever is alive;
- an idle worker takes the next connection, a busy one does not (SO_REUSEPORT hashes
  blindly); and it works beyond Linux.

Each worker has its own runtime: its own calls, its own admission limit
(`[server] max_concurrent_calls` is per process) and its own analytics DuckDB file
(a DuckDB file takes one process): `calls.duckdb` becomes `calls.worker0.duckdb`, ...

The supervisor forwards SIGTERM/SIGINT to every worker, so all drain together (a second
signal ends their calls now, as for one process), and exits when all have stopped.
Workers run in their own session, so a terminal's Ctrl-C reaches them only through it,
once. A worker that crashes after it was serving is restarted, after a pause that
doubles with each crash (1 s up to 30 s; back to 1 s after a minute of good service).
A worker that cannot start (it exits before it is serving) stops everything: the others
drain and `hookline serve` exits 1 with one line. Each worker holds a pipe from the
supervisor: if the supervisor dies (even by SIGKILL), the pipe closes and the worker
drains as on SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .errors import ConfigError, HooklineError
from .startup import StartupFailed

__all__ = [
    "DEFAULT_WORKERS",
    "WorkerOptions",
    "analytics_path_for",
    "bind_listener",
    "cores",
    "parse_worker_option",
    "report_failure",
    "report_ready",
    "run_workers",
    "watch_lifeline",
]

log = logging.getLogger("hookline.workers")

# `hookline serve` without `--workers` is one process, though every piece of state that
# must be shared now can be (stream tokens, analytics segments, `[storage]` for the
# calendar, outbox, messages and tows): more processes change what a config means
# without saying so. `[server] max_concurrent_calls` is per process (N workers admit N
# times as many), metrics are served on N ports (port, port + 1, ...), and with the
# default DuckDB storage the local calendar's file is held by one process (a second
# worker is refused at start-up, naming PostgreSQL). Ask for them: `--workers auto`
# (one per core) or a number.
DEFAULT_WORKERS = 1

RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
STABLE_S = 60.0  # a worker that served this long resets the restart pause
BACKLOG = 1024
READY = b"ready\n"


@dataclass(frozen=True)
class WorkerOptions:
    """What the supervisor tells one worker (hidden options of `hookline serve`)."""

    index: int
    listen_fd: int
    ready_fd: int  # written once the worker serves
    lifeline_fd: int  # EOF when the supervisor is gone


def cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def analytics_path_for(database: str, index: int) -> str:
    """The analytics file of worker `index`: one DuckDB file per process."""
    path = Path(database)
    return str(path.with_name(f"{path.stem}.worker{index}{path.suffix}"))


def bind_listener(host: str, port: int, file: str | None) -> socket.socket:
    """The listening socket every worker shares; one line when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {e.strerror or e} (use --host/--port)",
            file=file or None,
            key="server",
        ) from None
    return sock


# ---------------------------------------------------------------------- the supervisor


@dataclass
class _Worker:
    index: int
    process: trio.Process | None = None
    lifeline: int | None = None  # our end of the worker's lifeline pipe


@dataclass
class _Fleet:
    command: Callable[[WorkerOptions], list[str]]
    listen_fd: int
    workers: list[_Worker]
    env: Mapping[str, str] | None = None  # the workers' environment (None: ours)
    stopping: bool = False
    failure: str | None = None  # why the fleet stopped on its own
    failure_code: int = 1  # the exit status a worker that could not start asked for
    stop: trio.Event = field(default_factory=trio.Event)

    def stop_all(self, signum: int = signal.SIGTERM) -> None:
        self.stopping = True
        self.stop.set()
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signum)

    def fail(self, message: str) -> None:
        if self.failure is None and not self.stopping:
            self.failure = message
            log.error("%s: stopping every worker", message)
        self.stop_all()

    async def supervise(self, worker: _Worker) -> None:
        pause = RESTART_FIRST_S
        while not self.stopping:
            started = trio.current_time()
            reason = await self._start(worker)
            if reason is not None:
                self.fail(f"worker {worker.index} could not start: {reason}")
                return
            assert worker.process is not None
            await worker.process.wait()
            _close(worker)
            if self.stopping:
                return
            if trio.current_time() - started >= STABLE_S:
                pause = RESTART_FIRST_S
            log.warning(
                "worker %d (pid %d) stopped unexpectedly (%s): restarting it in %.0f s",
                worker.index,
                worker.process.pid,
                _describe(worker.process),
                pause,
            )
            with trio.move_on_after(pause):
                await self.stop.wait()
            pause = min(pause * 2, RESTART_MAX_S)

    async def _start(self, worker: _Worker) -> str | None:
        """Start the worker; None once it serves, else why it could not."""
        ready_r, ready_w = os.pipe()
        lifeline_r, lifeline_w = os.pipe()
        options = WorkerOptions(worker.index, self.listen_fd, ready_w, lifeline_r)
        try:
            worker.process = await trio.lowlevel.open_process(
                self.command(options),
                pass_fds=(self.listen_fd, ready_w, lifeline_r),
                env=self.env,
                start_new_session=True,  # a terminal's Ctrl-C reaches it through us, once
            )
        finally:
            os.close(ready_w)
            os.close(lifeline_r)
        worker.lifeline = lifeline_w
        log.info("worker %d started (pid %d)", worker.index, worker.process.pid)
        async with trio.lowlevel.FdStream(ready_r) as ready:
            said = await _read_all(ready)
        if said == READY:
            return None
        await worker.process.wait()
        _close(worker)
        code, _, reason = said.decode("utf-8", "replace").partition("\t")
        if reason and code.isdigit():
            self.failure_code = int(code)
            return reason.strip()
        return said.decode("utf-8", "replace").strip() or _describe(worker.process)


async def _read_all(stream: trio.lowlevel.FdStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(64):
        data += chunk
    return data


def _close(worker: _Worker) -> None:
    if worker.lifeline is not None:
        os.close(worker.lifeline)
        worker.lifeline = None


def _describe(process: trio.Process | None) -> str:
    code = None if process is None else process.returncode
    if code is None:
        return "not started"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


async def _forward_signals(fleet: _Fleet, signals: AsyncIterator[int]) -> None:
    async for signum in signals:
        live = sum(1 for w in fleet.workers if w.process and w.process.returncode is None)
        log.info("received %s: passing it to %d worker(s)", signal.Signals(signum).name, live)
        fleet.stop_all(signum)


def _worker_command(
    config_path: str, log_args: Sequence[str]
) -> Callable[[WorkerOptions], list[str]]:
    def command(options: WorkerOptions) -> list[str]:
        return [
            sys.executable,
            "-m",
            "hookline.cli",
            *log_args,
            "serve",
            config_path,
            "--workers",
            "1",
            f"--worker={options.index},{options.listen_fd},{options.ready_fd},{options.lifeline_fd}",
        ]

    return command


async def run_workers(
    config_path: str,
    host: str,
    port: int,
    count: int,
    *,
    file: str | None = None,
    log_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Serve on host:port with `count` worker processes until SIGTERM/SIGINT; 0 when
    every worker drained cleanly. Reports the bound port (port 0 picks one). `env`: the
    workers' environment (default: this process's)."""
    listener = bind_listener(host, port, file)
    with listener, trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        bound = listener.getsockname()[1]
        fleet = _Fleet(
            command=_worker_command(config_path, log_args),
            listen_fd=listener.fileno(),
            workers=[_Worker(i) for i in range(count)],
            env=env,
        )
        log.info("listening on %s:%d with %d worker processes", host, bound, count)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_forward_signals, fleet, signals)
            task_status.started(bound)
            async with trio.open_nursery() as supervisors:
                for worker in fleet.workers:
                    supervisors.start_soon(fleet.supervise, worker)
            nursery.cancel_scope.cancel()
    if fleet.failure is not None:
        raise StartupFailed(fleet.failure, fleet.failure_code)
    unclean = [
        f"worker {w.index} ({_describe(w.process)})"
        for w in fleet.workers
        if w.process is not None and w.process.returncode != 0
    ]
    if unclean:
        raise HooklineError(f"stopped, but not cleanly: {', '.join(unclean)}")
    log.info("every worker stopped")
    return 0


# ---------------------------------------------------------------------- in a worker


def parse_worker_option(text: str) -> WorkerOptions:
    index, listen_fd, ready_fd, lifeline_fd = (int(part) for part in text.split(","))
    return WorkerOptions(index, listen_fd, ready_fd, lifeline_fd)


def report_ready(options: WorkerOptions) -> None:
    """Tell the supervisor this worker serves (called once it listens)."""
    _report(options, READY)


def report_failure(options: WorkerOptions, reason: str, exit_code: int = 1) -> None:
    """Tell the supervisor why this worker cannot start (it prints it, once, and exits
    with `exit_code`, the status a single process would have exited with)."""
    _report(options, f"{exit_code}\t{reason}".encode("utf-8", "replace")[:4000])


def _report(options: WorkerOptions, message: bytes) -> None:
    try:
        os.write(options.ready_fd, message)
    finally:
        os.close(options.ready_fd)


async def watch_lifeline(options: WorkerOptions) -> None:
    """Drain as on SIGTERM when the supervisor is gone (its end of the pipe closed)."""
    async with trio.lowlevel.FdStream(options.lifeline_fd) as lifeline:
        while await lifeline.receive_some(64):
            pass
    log.warning("worker %d: the supervisor is gone: draining", options.index)
    os.kill(os.getpid(), signal.SIGTERM)
