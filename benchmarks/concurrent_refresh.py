"""Concurrent refreshes: several client processes against gunicorn with two sync workers (issue 12).

Two sites run at once on the harness's test database (PostgreSQL, or MySQL/MariaDB), each under
``gunicorn -w 2`` (sync workers) on its own port:

- plain DOT: :mod:`benchmarks.plain_dot_settings` (DOT 3.4.1's views and stock
  validator, ``offline_access`` not installed);
- offline_access: :mod:`benchmarks.app_settings` (the test settings: the example
  site, its validator and views).

Every client process owns one chain per site: its own user and confidential
client, whose tokens were obtained through that site's own endpoints over HTTP
(the user's browser session approves on the site's authorization page, the client
exchanges the code with PKCE), so each site stores its tokens its own way (the app
hashed, DOT in plaintext). A round lets the client processes refresh their chain
of one site for a fixed time, each request presenting the refresh token the
previous one returned; rounds alternate between the sites (DOT, app, app, DOT,
...). Each request's latency is kept; the throughput is the requests of the
rounds over their wall-clock time. Any answer but a 200 with a new refresh token
fails the benchmark, and afterwards the database must hold exactly one live
refresh token per chain and one rotated one per refresh.

It needs a server database (PostgreSQL; MySQL/MariaDB works too, the test suite runs it
there): on SQLite (an in-memory database no other process can open) it returns no rows
and says so on stderr.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/offline_access_bench \\
        python -m benchmarks --only concurrent
    BENCHMARK_PROFILE_DIR=/tmp/profiles ... python -m benchmarks --only concurrent   # cProfile per worker
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlsplit

NAME = "concurrent"
WORKLOAD = f"{NAME}: refresh"
#: gunicorn sync workers per site (the issue's deployment shape).
WORKERS = 2
#: Client processes refreshing at once, one chain each per site (not scaled by --scale).
CLIENT_PROCESSES = 4
ROOT = Path(__file__).resolve().parent.parent
REQUEST_TIMEOUT = 30
#: Seconds the client processes wait for a round's common start after it is handed out.
START_DELAY = 0.3


@dataclass
class Site:
    side: str
    settings_module: str
    #: What the user sends to approve on the site's authorization page.
    approval: dict[str, str]
    port: int = 0
    server: subprocess.Popen | None = None
    log: Path | None = None
    chains: list[Chain] = field(default_factory=list)
    #: Refreshes answered 200 on this site (warm-up and final check included).
    refreshes: int = 0

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else "(no log)"


@dataclass
class Chain:
    client_id: str
    client_secret: str
    refresh_token: str


@dataclass
class Round:
    latencies: list[float]
    wall: float
    #: CPU seconds the site's gunicorn workers spent in the round (None: a worker was replaced).
    worker_cpu: float | None = None


def run(options) -> list:
    from django.db import connection

    from benchmarks import harness

    if connection.vendor not in SCHEMES:
        print(
            f"{NAME}: skipped: it needs PostgreSQL or MySQL/MariaDB (gunicorn's workers and the "
            "benchmark share a server database); set DATABASE_URL=postgres://...",
            file=sys.stderr,
        )
        return []
    processes = CLIENT_PROCESSES
    rounds_per_side = options.size(5, 2)
    seconds_per_round = options.size(5000, 1000) / 1000
    sites = [
        Site(harness.PLAIN_DOT, "benchmarks.plain_dot_settings", {"allow": "Authorize"}),
        Site(harness.APP, "benchmarks.app_settings", {"decision": "allow"}),
    ]
    workdir = Path(tempfile.mkdtemp(prefix="offline-access-concurrent-"))
    try:
        for site in sites:
            start_site(site, workdir)
        for site in sites:
            wait_until_ready(site)
            site.chains = [seed_chain(site, number) for number in range(processes)]
        measured = measure(sites, rounds_per_side, seconds_per_round)
        verify_chains(sites)
    except BaseException:
        for site in sites:
            print(f"--- gunicorn log, {site.side} ---\n{site.log_text()}", file=sys.stderr)
        raise
    finally:
        for site in sites:
            stop_site(site)
    return results(sites, measured, processes, rounds_per_side, seconds_per_round)


def results(sites: list[Site], measured: dict[str, list[Round]], processes, rounds, seconds) -> list:
    from benchmarks import harness

    rows = {}
    for site in sites:
        latencies = [latency for one in measured[site.side] for latency in one.latencies]
        wall = sum(one.wall for one in measured[site.side])
        row = harness.Result(WORKLOAD, site.side, latencies, wall_seconds=wall)
        row.extra = {
            "throughput": len(latencies) / wall,
            "p50_ms": row.median_ms,
            "p95_ms": row.p95_ms,
            "p99_ms": row.p99_ms,
            "requests": len(latencies),
            "wall_seconds": wall,
        }
        cpu = [one.worker_cpu for one in measured[site.side]]
        if cpu and None not in cpu:
            # The workers' own CPU per request: the server's cost, which other processes on a
            # busy machine hardly change (PostgreSQL's and the clients' CPU not included).
            row.extra["worker_cpu_ms"] = sum(cpu) / len(latencies) * 1000
        rows[site.side] = row
    dot = rows[harness.PLAIN_DOT].extra["throughput"]
    dot_rounds = [len(one.latencies) / one.wall for one in measured[harness.PLAIN_DOT]]
    for side, row in rows.items():
        side_rounds = [len(one.latencies) / one.wall for one in measured[side]]
        per_round = ", ".join(f"{throughput:.1f}" for throughput in side_rounds)
        row.extra["throughput_ratio"] = row.extra["throughput"] / dot
        # Round i of each site ran back to back (A B, then B A): their ratio cancels slow drifts
        # of a shared machine better than the totals do.
        row.extra["paired_ratio_median"] = statistics.median(
            mine / theirs for mine, theirs in zip(side_rounds, dot_rounds, strict=True)
        )
        ratio = (
            ""
            if side == harness.PLAIN_DOT
            else f", {row.extra['throughput_ratio']:.2f}x plain DOT's "
            f"(median of paired rounds {row.extra['paired_ratio_median']:.2f}x)"
        )
        row.note = (
            f"{processes} client processes, gunicorn -w {WORKERS} (sync), {rounds} rounds of {seconds:g} s; "
            f"throughput {row.extra['throughput']:.1f} requests/s (wall clock){ratio}; "
            f"p99 {row.extra['p99_ms']:.1f} ms; rounds: {per_round} requests/s"
        )
        if "worker_cpu_ms" in row.extra:
            row.note += f"; gunicorn workers' CPU {row.extra['worker_cpu_ms']:.1f} ms per request"
    return list(rows.values())


# --- the sites -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: dj-database-url's scheme for each server database the sites can share.
SCHEMES = {"postgresql": "postgres", "mysql": "mysql"}


def database_url() -> str:
    """The harness's test database (already created) as a DATABASE_URL for the gunicorn sites."""
    from django.db import connection

    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    port = f":{db['PORT']}" if db["PORT"] else ""
    host, name = db["HOST"] or "", quote(db["NAME"], safe="")
    return f"{SCHEMES[connection.vendor]}://{credentials}@{host}{port}/{name}"


def start_site(site: Site, workdir: Path) -> None:
    from django.conf import settings

    site.port = free_port()
    site.log = workdir / f"gunicorn-{site.settings_module}.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": site.settings_module,
        "DATABASE_URL": database_url(),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        # Production-like: no query log kept per request, no debug pages.
        "DJANGO_DEBUG": "0",
        # One ID-token signing key for every worker of both sites (benchmarks/app_settings.py).
        "BENCHMARK_OIDC_RSA_PRIVATE_KEY": settings.OAUTH2_PROVIDER["OIDC_RSA_PRIVATE_KEY"],
    }
    profile = []
    if os.environ.get("BENCHMARK_PROFILE_DIR"):
        # cProfile in every worker (benchmarks/gunicorn_profile.py): for where the time goes only.
        profile = ["--config", "python:benchmarks.gunicorn_profile"]
        env["BENCHMARK_SITE"] = site.settings_module.rsplit(".", 1)[-1]
    with site.log.open("wb") as log:
        site.server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "example_project.wsgi:application",
                "--workers",
                str(WORKERS),
                "--worker-class",
                "sync",
                "--bind",
                f"127.0.0.1:{site.port}",
                "--timeout",
                "60",
                *profile,
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_site(site: Site) -> None:
    if site.server is None or site.server.poll() is not None:
        return
    try:
        os.killpg(site.server.pid, signal.SIGTERM)
        site.server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(site.server.pid, signal.SIGKILL)
        site.server.wait(timeout=15)
    except ProcessLookupError:
        pass


def request(site: Site, method: str, path: str, body: dict | None = None, headers: dict | None = None):
    """One HTTP request on a fresh connection (gunicorn's sync workers close each): status, headers, body."""
    connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=REQUEST_TIMEOUT)
    try:
        headers = dict(headers or {})
        data = None
        if body is not None:
            data = urlencode(body)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, data, headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def wait_until_ready(site: Site, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if site.server.poll() is not None:
            raise RuntimeError(f"gunicorn for {site.side} exited with {site.server.returncode}")
        try:
            status, _headers, _body = request(site, "GET", "/o/.well-known/openid-configuration")
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn for {site.side} did not answer within {timeout} s")
        time.sleep(0.2)


# --- seeding: a user, a client and a refresh token per client process, through the site itself ---------


def cookies_of(headers, jar: dict[str, str]) -> None:
    for header in headers.get_all("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        jar[name.strip()] = rest.split(";", 1)[0]


def seed_chain(site: Site, number: int) -> Chain:
    """A user approves a new client on ``site``'s authorization page; the client exchanges the code."""
    from django.conf import settings
    from django.test import Client

    from tests.factories import CLIENT_SECRET, ApplicationFactory, UserFactory
    from tests.oauth import CHALLENGE, VERIFIER

    tag = f"{NAME}-{site.settings_module.rsplit('.', 1)[-1]}-{number}-{uuid.uuid4().hex[:8]}"
    user = UserFactory(username=tag)
    application = ApplicationFactory(name=tag, client_id=tag)
    # The user's browser session, made here on the shared database (same SECRET_KEY as the sites).
    browser = Client()
    browser.force_login(user)
    jar = {settings.SESSION_COOKIE_NAME: browser.cookies[settings.SESSION_COOKIE_NAME].value}
    redirect_uri = application.redirect_uris.split()[0]
    authorize = "/o/authorize/?" + urlencode(
        {
            "response_type": "code",
            "client_id": application.client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid offline_access",
            "state": "concurrent",
            "nonce": "concurrent",
            "code_challenge": CHALLENGE,
            "code_challenge_method": "S256",
            "prompt": "consent",
        }
    )

    def cookie_header():
        return {"Cookie": "; ".join(f"{name}={value}" for name, value in jar.items())}

    status, headers, body = request(site, "GET", authorize, headers=cookie_header())
    cookies_of(headers, jar)
    if status == 200:
        from tests.oauth import hidden_inputs

        answer = {**hidden_inputs(body.decode()), **site.approval}
        status, headers, body = request(site, "POST", authorize, answer, headers=cookie_header())
    location = headers.get("Location", "")
    code = parse_qs(urlsplit(location).query).get("code", [None])[0]
    if status != 302 or not code:
        raise RuntimeError(f"{site.side}: no authorization code ({status} {location!r}): {body[:500]!r}")
    status, _headers, body = request(
        site,
        "POST",
        "/o/token/",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": VERIFIER,
            "client_id": application.client_id,
            "client_secret": CLIENT_SECRET,
        },
    )
    tokens = json.loads(body) if status == 200 else {}
    if "refresh_token" not in tokens:
        raise RuntimeError(f"{site.side}: code exchange answered {status}: {body[:500]!r}")
    return Chain(application.client_id, CLIENT_SECRET, tokens["refresh_token"])


# --- the rounds --------------------------------------------------------------------------------


def refresh_chain(port: int, chain: Chain, start_at: float, stop_at: float, limit: int | None = None) -> dict:
    """In a client process: refresh ``chain`` from ``start_at`` until ``stop_at`` (time.time()).

    Returns the latencies, the last refresh token and the first failure, if any
    (the chain stops there: a failed refresh is a broken benchmark, not a slow request).
    """
    latencies: list[float] = []
    token = chain.refresh_token
    failure = None
    time.sleep(max(0.0, start_at - time.time()))
    began = time.time()
    while time.time() < stop_at and (limit is None or len(latencies) < limit):
        body = urlencode(
            {
                "grant_type": "refresh_token",
                "refresh_token": token,
                "client_id": chain.client_id,
                "client_secret": chain.client_secret,
            }
        )
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        try:
            start = time.perf_counter()
            connection.request(
                "POST", "/o/token/", body, {"Content-Type": "application/x-www-form-urlencoded"}
            )
            response = connection.getresponse()
            answer = response.read()
            latency = time.perf_counter() - start
        except OSError as error:
            failure = f"{chain.client_id}: {error!r}"
            break
        finally:
            connection.close()
        try:
            issued = json.loads(answer)["refresh_token"] if response.status == 200 else None
        except (ValueError, KeyError, TypeError):
            issued = None
        if not issued or issued == token:
            failure = f"{chain.client_id}: {response.status} {answer[:300]!r}"
            break
        latencies.append(latency)
        token = issued
    return {"latencies": latencies, "token": token, "failure": failure, "began": began, "ended": time.time()}


def _refresh_chain(arguments):
    return refresh_chain(*arguments)


def _pid(pause: float) -> int:
    time.sleep(pause)
    return os.getpid()


def worker_cpu_seconds(site: Site) -> dict[int, float]:
    """User and system CPU seconds of each gunicorn worker of ``site`` (Linux /proc), by pid."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # from field 3 (state) on
        if int(fields[1]) == site.server.pid:
            found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def run_round(pool, site: Site, seconds: float) -> Round:
    cpu_before = worker_cpu_seconds(site) if sys.platform == "linux" else {}
    start_at = time.time() + START_DELAY
    outcomes = pool.map(
        _refresh_chain,
        [(site.port, chain, start_at, start_at + seconds) for chain in site.chains],
        chunksize=1,
    )
    failures = [outcome["failure"] for outcome in outcomes if outcome["failure"]]
    for chain, outcome in zip(site.chains, outcomes, strict=True):
        chain.refresh_token = outcome["token"]
    if failures:
        raise RuntimeError(f"{site.side}: refresh failed: " + "; ".join(failures))
    late = max(outcome["began"] for outcome in outcomes) - start_at
    if late > seconds / 10:
        print(f"{NAME}: {site.side}: a client process started {late:.2f} s late (busy?)", file=sys.stderr)
    latencies = [latency for outcome in outcomes for latency in outcome["latencies"]]
    site.refreshes += len(latencies)
    cpu_after = worker_cpu_seconds(site) if cpu_before else {}
    cpu = None
    if cpu_before and cpu_after.keys() == cpu_before.keys():
        cpu = sum(cpu_after.values()) - sum(cpu_before.values())
    return Round(latencies, max(outcome["ended"] for outcome in outcomes) - start_at, cpu)


def measure(sites: list[Site], rounds_per_side: int, seconds: float) -> dict[str, list[Round]]:
    """Alternating rounds (A B B A A B ...) after one short warm-up round per site."""
    from django.db import connections

    # The client processes need no database; nothing of the harness's connection goes with them.
    connections.close_all()
    measured: dict[str, list[Round]] = {site.side: [] for site in sites}
    context = multiprocessing.get_context("spawn")
    processes = len(sites[0].chains)
    with context.Pool(processes) as pool:
        # Every client process started (spawned) before any round's clock runs.
        pids = set(pool.map(_pid, [START_DELAY] * processes * 2, chunksize=1))
        if len(pids) != processes:
            print(f"{NAME}: {len(pids)} of {processes} client processes answered at start", file=sys.stderr)
        for site in sites:
            run_round(pool, site, min(1.0, seconds))  # warm-up: both workers booted, caches filled
        for number in range(rounds_per_side):
            order = sites if number % 2 == 0 else sites[::-1]
            for site in order:
                measured[site.side].append(run_round(pool, site, seconds))
    return measured


def verify_chains(sites: list[Site]) -> None:
    """Each chain still refreshes; the database holds what the rotations should have left."""
    from oauth2_provider.models import get_refresh_token_model

    RefreshToken = get_refresh_token_model()
    for site in sites:
        run_round_once(site)
        client_ids = [chain.client_id for chain in site.chains]
        tokens = RefreshToken.objects.filter(application__client_id__in=client_ids)
        live = tokens.filter(revoked__isnull=True).count()
        if live != len(site.chains):
            raise RuntimeError(f"{site.side}: {live} live refresh tokens for {len(site.chains)} chains")
        # One refresh token per chain from the code exchange, then one per successful refresh.
        refreshes = tokens.count() - len(site.chains)
        if refreshes != site.refreshes:
            raise RuntimeError(f"{site.side}: {refreshes} rotations stored, {site.refreshes} refreshes done")


def run_round_once(site: Site) -> None:
    """One more refresh of every chain, from here: each must still work."""
    for chain in site.chains:
        outcome = refresh_chain(site.port, chain, 0, time.time() + REQUEST_TIMEOUT, limit=1)
        if outcome["failure"] or len(outcome["latencies"]) != 1:
            raise RuntimeError(f"{site.side}: final refresh failed: {outcome['failure']}")
        chain.refresh_token = outcome["token"]
        site.refreshes += 1
