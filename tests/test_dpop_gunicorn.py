"""DPoP replay protection across processes: two gunicorn workers sharing Redis (issue 11).

A proof's ``jti`` is remembered in Django's cache (``OFFLINE_ACCESS["DPOP_REPLAY_CACHE"]``).
tests/test_dpop.py proves the cache semantics with threads in one process; this runs the
real deployment shape: the example site under ``gunicorn -w 2`` (two sync worker
processes), ``REDIS_URL`` selecting Django's RedisCache (example_project/settings.py),
and the same proof sent to both workers at once. Exactly one request gets past the proof
check; every other one is a replay, ``invalid_dpop_proof``.

The control runs the same site on the local-memory cache (no ``REDIS_URL``): each worker
remembers only its own ``jti``s, so each worker accepts the proof once. That weakness is
why ``check --deploy`` warns (offline_access.W004); the test asserts it exists.

Which worker answered which request is read from gunicorn's access log: every request
carries an ``X-Burst-Id`` header, logged next to the worker's pid (``%(p)s``).

The database is a fresh SQLite file, or, when ``DATABASE_URL`` names a PostgreSQL or
MySQL/MariaDB server, a fresh database on it (a random name: xdist workers never share
one), created and dropped here. Without a Redis server on
``REDIS_URL`` (default redis://127.0.0.1:6379/0) the Redis test is skipped, except on CI
(``CI`` set), where .ci/run starts Redis and its absence fails the test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from example_project.demo.flow import NATIVE_CLIENT_ID

from .dpop import REDIS_URL, new_key, proof, require_redis

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2
#: Requests carrying the same proof, sent at once.
BURST = 24
#: Bursts tried until both workers answered within one (each has good odds; see _burst_until_both).
ROUNDS = 6
REQUEST_TIMEOUT = 10
#: Seconds the seeding may take. It migrates a fresh database: about 2 s on SQLite, 10 s on
#: MariaDB on 2 cores at a load of 7 (each DDL statement commits, with its own fsync), and
#: several times that when the whole suite runs beside it on such a machine.
SEED_TIMEOUT = 300
ACCESS_LOG_FORMAT = "%(p)s %({x-burst-id}i)s %(s)s"

#: Run by ``manage.py shell`` on the server's database: migrate, the demo's clients and users,
#: then alice approves the native app and the authorization code (with PKCE) is handed back.
SEED = """
import base64, hashlib, json, os, re
from urllib.parse import parse_qs, urlencode, urlparse
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from example_project.demo.flow import NATIVE_CLIENT_ID, NATIVE_EXAMPLE_REDIRECT_URI as REDIRECT_URI

call_command("migrate", verbosity=0)
call_command("seed_demo", stdout=open(os.devnull, "w"))
verifier = "v" * 64
challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
url = "/o/authorize/?" + urlencode({
    "response_type": "code", "client_id": NATIVE_CLIENT_ID, "redirect_uri": REDIRECT_URI,
    "scope": "openid offline_access", "prompt": "consent", "state": "demo",
    "code_challenge": challenge, "code_challenge_method": "S256",
})
browser = Client()
browser.force_login(get_user_model().objects.get(username="alice"))
signed = re.search(r'name="request" value="([^"]+)"', browser.get(url).content.decode()).group(1)
answer = browser.post(url, {"request": signed, "decision": "allow"})
code = parse_qs(urlparse(answer["Location"]).query)["code"][0]
with open(os.environ["SEED_OUTPUT"], "w") as out:
    json.dump({"code": code, "code_verifier": verifier, "redirect_uri": REDIRECT_URI}, out)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def database_url(tmp_path) -> Iterator[str]:
    """A database of the server's own: a SQLite file, or a fresh one on DATABASE_URL's server."""
    configured = os.environ.get("DATABASE_URL", "").strip()
    if not configured:
        yield f"sqlite:///{tmp_path / 'db.sqlite3'}"
        return
    parts = urlsplit(configured)
    name = f"{parts.path.lstrip('/') or 'offline_access'}_gunicorn_{uuid.uuid4().hex[:8]}"
    if parts.scheme.startswith("mysql"):
        import MySQLdb

        server = {"host": parts.hostname or "127.0.0.1", "port": parts.port or 3306}
        server.update(user=parts.username or "root", password=parts.password or "")
        with MySQLdb.connect(**server) as connection:
            connection.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        try:
            yield urlunsplit(parts._replace(path=f"/{name}"))
        finally:
            with MySQLdb.connect(**server) as connection:
                connection.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        return
    import psycopg

    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Site:
    """The example site under gunicorn; ``pids_of`` reads who answered from the access log."""

    def __init__(self, base_url: str, access_log: Path, seed: dict):
        self.base_url, self.access_log, self.seed = base_url, access_log, seed
        self.token_url = f"{base_url}/o/token/"

    def pids_of(self, burst_ids: set[str]) -> dict[str, str]:
        """burst id -> worker pid, waiting for the lines (gunicorn logs after the response)."""
        deadline = time.monotonic() + 5
        while True:
            found = {}
            for line in self.access_log.read_text().splitlines():
                match = re.fullmatch(r"<(\d+)> (\S+) (\d+)", line.strip())
                if match and match.group(2) in burst_ids:
                    found[match.group(2)] = match.group(1)
            if len(found) == len(burst_ids) or time.monotonic() > deadline:
                assert len(found) == len(burst_ids), (
                    f"access log lacks requests: {sorted(burst_ids - set(found))}"
                )
                return found
            time.sleep(0.05)


def start_site(tmp_path: Path, database_url: str, redis_url: str | None) -> Iterator[Site]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "DATABASE_URL": database_url,
        "PYTHONPATH": str(ROOT),
        "SEED_OUTPUT": str(tmp_path / "seed.json"),
    }
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    # tests/settings.py put an in-memory signing key in the environment: both workers share it.
    assert env.get("OIDC_RSA_PRIVATE_KEY")
    try:
        seeded = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", SEED],
            cwd=ROOT,
            env=env,
            timeout=SEED_TIMEOUT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"seeding {database_url.split('://')[0]} took over {SEED_TIMEOUT} s (migrate, seed_demo)")
    assert seeded.returncode == 0, f"seeding failed:\n{seeded.stderr}"
    seed = json.loads((tmp_path / "seed.json").read_text())

    port = free_port()
    access_log, error_log = tmp_path / "access.log", tmp_path / "error.log"
    access_log.touch()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "example_project.wsgi",
            "-w",
            str(WORKERS),
            "-b",
            f"127.0.0.1:{port}",
            "--access-logfile",
            str(access_log),
            "--access-logformat",
            ACCESS_LOG_FORMAT,
            "--error-logfile",
            str(error_log),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    site = Site(f"http://127.0.0.1:{port}", access_log, seed)
    try:
        wait_for_both_workers(site, server, error_log)
        yield site
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


def wait_for_both_workers(site: Site, server: subprocess.Popen, error_log: Path) -> None:
    """Until both workers have answered (each loads Django on boot); else the burst meets one."""
    deadline = time.monotonic() + 60  # each worker loads Django on boot: slow on a loaded machine
    seen: set[str] = set()
    attempt = 0
    while len(seen) < WORKERS:
        assert server.poll() is None, f"gunicorn exited:\n{error_log.read_text()}"
        assert time.monotonic() < deadline, f"not {WORKERS} workers answering:\n{error_log.read_text()}"
        attempt += 1
        ids = {f"warmup-{attempt}-{i}" for i in range(8)}
        try:
            all_at_once(
                [
                    lambda burst_id=burst_id: requests.get(
                        f"{site.base_url}/o/.well-known/openid-configuration",
                        headers={"X-Burst-Id": burst_id},
                        timeout=REQUEST_TIMEOUT,
                    )
                    for burst_id in ids
                ]
            )
        except requests.ConnectionError:
            time.sleep(0.2)
            continue
        seen |= set(site.pids_of(ids).values())


def all_at_once(calls) -> list:
    """Run the calls in parallel threads, released together."""
    start = threading.Barrier(len(calls))

    def run(call):
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.fixture
def redis_site(tmp_path, database_url) -> Iterator[Site]:
    require_redis()
    yield from start_site(tmp_path, database_url, REDIS_URL)


@pytest.fixture
def locmem_site(tmp_path, database_url) -> Iterator[Site]:
    yield from start_site(tmp_path, database_url, None)


def token_request(site: Site, data: dict, dpop: str, burst_id: str) -> requests.Response:
    return requests.post(
        site.token_url,
        data={**data, "client_id": NATIVE_CLIENT_ID},
        headers={"DPoP": dpop, "X-Burst-Id": burst_id},
        timeout=REQUEST_TIMEOUT,
    )


def body_of(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def is_replay(response: requests.Response) -> bool:
    if response.status_code != 400:
        return False
    body = body_of(response)
    return body.get("error") == "invalid_dpop_proof" and "used already" in body.get("error_description", "")


def same_proof_burst(site: Site, data: dict, dpop: str, round_: int):
    """BURST requests with one proof; returns [(response, worker pid)] in sending order."""
    ids = [f"r{round_}-{i}" for i in range(BURST)]
    responses = all_at_once([lambda i=i: token_request(site, data, dpop, i) for i in ids])
    pids = site.pids_of(set(ids))
    return [(response, pids[i]) for response, i in zip(responses, ids, strict=True)]


def describe(answers) -> str:
    """A one-line summary for assertion messages: (pid, status, error) counts."""
    counts = Counter(
        (pid, r.status_code, body_of(r).get("error") or body_of(r).get("token_type")) for r, pid in answers
    )
    return json.dumps({f"{pid} {status} {what}": n for (pid, status, what), n in sorted(counts.items())})


def test_rfc9449_11_1_two_gunicorn_workers_sharing_redis_accept_a_proof_once(redis_site):
    began = time.monotonic()
    key = new_key()
    seed = redis_site.seed
    exchanged = token_request(
        redis_site,
        {
            "grant_type": "authorization_code",
            "code": seed["code"],
            "redirect_uri": seed["redirect_uri"],
            "code_verifier": seed["code_verifier"],
        },
        proof(key, htu=redis_site.token_url),
        "exchange",
    )
    assert exchanged.status_code == 200, exchanged.content
    assert exchanged.json()["token_type"] == "DPoP"
    refresh_token = exchanged.json()["refresh_token"]

    # The bound family refreshes with its key; the same proof goes to both workers at once.
    # A burst that happened to meet one worker only proves nothing across processes: it is
    # checked all the same, and another burst (fresh proof, the rotated token) follows.
    for round_ in range(ROUNDS):
        answers = same_proof_burst(
            redis_site,
            {"grant_type": "refresh_token", "refresh_token": refresh_token},
            proof(key, htu=redis_site.token_url),
            round_,
        )
        summary = describe(answers)
        accepted = [response for response, _pid in answers if not is_replay(response)]
        assert len(accepted) == 1, summary
        assert accepted[0].status_code == 200, summary
        assert accepted[0].json()["token_type"] == "DPoP"
        refresh_token = accepted[0].json()["refresh_token"]
        (winner,) = [pid for response, pid in answers if not is_replay(response)]
        # A worker other than the one that accepted the proof refused it as a replay:
        # it can only know the jti through Redis.
        if any(pid != winner for response, pid in answers if is_replay(response)):
            break
    else:
        pytest.fail(f"no burst of {BURST} met both workers in {ROUNDS} rounds: {summary}")
    assert time.monotonic() - began < 20


def test_w004_per_process_cache_lets_each_gunicorn_worker_accept_the_same_proof(locmem_site):
    """The control: on the local-memory cache each worker accepts the proof once (the W004 warning).

    The requests are refreshes of an unknown token: past the proof check they end in
    invalid_grant without writing anything, so what is counted is only the proof check.
    """
    key = new_key()
    for round_ in range(ROUNDS):
        answers = same_proof_burst(
            locmem_site,
            {"grant_type": "refresh_token", "refresh_token": "not-a-refresh-token"},
            proof(key, htu=locmem_site.token_url),
            round_,
        )
        summary = describe(answers)
        assert all(is_replay(r) or body_of(r).get("error") == "invalid_grant" for r, _pid in answers), summary
        accepted_by = Counter(pid for response, pid in answers if not is_replay(response))
        workers = {pid for _response, pid in answers}
        # Deterministic per process: every worker that saw the proof accepted it exactly once.
        assert accepted_by == Counter(workers), summary
        if len(workers) == WORKERS:
            break
    else:
        pytest.fail(f"no burst of {BURST} met both workers in {ROUNDS} rounds")
    # The weakness itself: one proof, two acceptances.
    assert sum(accepted_by.values()) == WORKERS, summary
