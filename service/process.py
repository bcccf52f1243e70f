"""`nnserve serve`: run the server until SIGTERM or SIGINT, then shut down gracefully.

Order of events: logging configured, thread counts applied, ports bound, RPCs and REST
requests accepted with health NOT_SERVING, kernels warmed up, health SERVING and one
"serving" line naming the address and the ports; on a signal, health NOT_SERVING, in-flight
RPCs and requests finish within the grace period, exit status 0.
"""

import logging
import os
import signal
import sys
import threading
import time

from .logs import configure_logging
from .heap_trimmer import start_heap_trimmer
from .settings import settings_from_args

__all__ = ["limit_threads", "run", "serve_command"]

logger = logging.getLogger("nnserve.service")


def limit_threads(threads, training_threads=1):
    """Give each BLAS call (the kernels' matrix products) at most `threads` threads, and a
    training job's or TrainStream's steps `training_threads` while no other call computes
    (0: one per core).

    The kernels themselves are serial (numba's thread pool is never started, see
    docs/design.md), so BLAS is the only library that spawns threads.
    """
    import scipy.linalg.cython_blas  # noqa: F401 - load the BLAS numba's np.dot calls
    from threadpoolctl import threadpool_limits

    from nnserve.model.thread_budget import BUDGET

    threadpool_limits(limits=threads, user_api="blas")
    BUDGET.enable(threads, training_threads or len(os.sched_getaffinity(0)))


def run(settings):
    """Serve until SIGTERM/SIGINT; return the exit status (0 after a graceful shutdown)."""
    configure_logging(settings.log_format, settings.log_level)
    from nnserve.model import runtime_info, warmup

    from .server import create_server

    try:
        if settings.threads:
            limit_threads(settings.threads, settings.training_threads)
        server, port = create_server(settings)
    except (OSError, ValueError) as error:
        logger.error("cannot start: %s", error, extra={"event": "start_failed"})
        return 1

    stopping = threading.Event()

    def on_signal(number, frame):
        name = signal.Signals(number).name
        if stopping.is_set():
            logger.info("%s ignored: already shutting down", name, extra={"event": "signal"})
            return
        logger.info("%s received", name, extra={"event": "signal", "signal": name})
        stopping.set()

    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGTERM, signal.SIGINT)}
    stop_trimming = start_heap_trimmer()
    try:
        server.start(serving=False)
        try:
            seconds = warmup(callers=settings.workers)
        except Exception:
            logger.exception("kernel warm-up failed", extra={"event": "start_failed"})
            server.stop(0).wait()
            return 1
        runtime = runtime_info()
        kernel_blas = [pool for pool in runtime["blas"] if pool["used_by_kernels"]]
        logger.info("kernels ready", extra={
            "event": "warmed_up", "seconds": round(seconds, 3),
            "threading_layer": runtime["threading_layer"], "blas_threads": runtime["blas_threads"],
            "blas_buffers_primed": settings.workers,
            "blas": ", ".join(f"{pool['internal_api']} {pool['version']} {pool['architecture']}"
                              for pool in kernel_blas) or "unknown"})
        server.set_serving()
        logger.info("serving on %s:%d", settings.host, port,
                    extra={"event": "serving", "host": settings.host, "port": port,
                           "http_port": server.http_port, "metrics_port": server.metrics_port,
                           "health_port": server.health_port, "workers": settings.workers})
        stopping.wait()
        started = time.perf_counter()
        logger.info("shutting down", extra={"event": "shutting_down",
                                            "grace_period": settings.grace_period,
                                            "drain_period": settings.drain_period})
        server.stop().wait()
        logger.info("stopped", extra={"event": "stopped",
                                      "seconds": round(time.perf_counter() - started, 3)})
    finally:
        if stop_trimming is not None:
            stop_trimming.set()
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0


def serve_command(args):
    """The `nnserve serve` handler: settings from flags and environment, then run()."""
    try:
        settings = settings_from_args(args)
    except ValueError as error:
        print(f"nnserve serve: error: {error}", file=sys.stderr)
        return 2
    return run(settings)
