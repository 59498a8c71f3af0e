"""gunicorn hooks that profile a benchmark site's workers (cProfile, each warm token request).

benchmarks/concurrent_refresh.py loads them when ``BENCHMARK_PROFILE_DIR`` is set:
each worker writes ``<site>-<pid>.prof`` there when it stops, to be read with
``python -m pstats`` (sort by cumulative time, look under ``WSGIHandler.__call__``).
A profiled run is slower: its throughput says nothing, its call counts and shares do.

The clock is the worker's CPU time (``time.process_time``), which a busy machine's
other processes do not inflate; ``BENCHMARK_PROFILE_CLOCK=wall`` counts waiting too
(for the database, for a lock, for the CPU).
"""

import cProfile
import os
import time

#: Requests a worker serves unprofiled first: its lazy imports and first queries are not the steady state.
WARM_UP = int(os.environ.get("BENCHMARK_PROFILE_WARM_UP", "20"))


def post_fork(server, worker):
    wall = os.environ.get("BENCHMARK_PROFILE_CLOCK") == "wall"
    worker.profile = cProfile.Profile(time.perf_counter if wall else time.process_time)
    worker.served = 0


def pre_request(worker, request):
    """Profile the token endpoint's requests only, once the worker is warm."""
    worker.served += 1
    if worker.served > WARM_UP and request.path == "/o/token/":
        worker.profile.enable()


def post_request(worker, request, environ, response):
    worker.profile.disable()


def worker_exit(server, worker):
    profile = getattr(worker, "profile", None)
    if profile is None:
        return
    profile.disable()
    name = f"{os.environ.get('BENCHMARK_SITE', 'site')}-{os.getpid()}.prof"
    profile.dump_stats(os.path.join(os.environ["BENCHMARK_PROFILE_DIR"], name))
