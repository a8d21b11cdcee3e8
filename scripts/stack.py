"""Run the five services (and the local model server) as separate processes, restart any that
dies, stop them all cleanly.

`python -m scripts.stack` is what `make up` runs (Ctrl-C stops everything); `--replicas 2`
(or DOCPIPE_STACK_REPLICAS=2) runs a second set of the five services on ports of their own,
on the same database and bus: replicas, as a deployment scales them (Stack.replica). The test
suite and the demo use the Stack class directly, with their own environment and log files. A
stack is a development stack: DOCPIPE_ENV is dev (the development keys) unless the environment
says otherwise, and without DOCPIPE_DATABASE_URL it uses the development roles of
scripts/postgres_roles.sh.

PostgreSQL (docs/decisions/0980): the stack runs the migrate step itself, as
DOCPIPE_MIGRATE_DATABASE_URL's role, before it starts anything; the services get only
DOCPIPE_DATABASE_URL, the runtime role's, as a deployment's would.

Each service connects to RabbitMQ as its own least-privilege user (scripts/rabbitmq_users.sh):
the stack declares the topology first with the admin URL, DOCPIPE_AMQP_URL, and hands each
service the same broker address with its own user. DOCPIPE_AMQP_SERVICE_USERS=off keeps every
service on DOCPIPE_AMQP_URL (a broker without those users).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import asyncpg
import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from shared.bus.identity import dev_password, service_user, url_with_user
from shared.bus.publisher import declare_topology_at
from shared.db import DEV_OWNER_ROLE, DEV_RUNTIME_ROLE, prepare_database, with_role
from shared.settings import Settings
from shared.topology import Topology

SERVICES = ("ingest", "extractor", "ocr", "analyzer", "progress")
# The local model server (llama.cpp's OpenAI-compatible server, scripts/model_server.py): one
# more supervised process, which the analyzer's LLM backend calls at DOCPIPE_LLM_BASE_URL.
MODEL_SERVER = "model_server"
PORT_SETTINGS = {
    "ingest": "DOCPIPE_INGEST_PORT",
    "progress": "DOCPIPE_PROGRESS_PORT",
    "extractor": "DOCPIPE_EXTRACTOR_PORT",
    "ocr": "DOCPIPE_OCR_PORT",
    "analyzer": "DOCPIPE_ANALYZER_PORT",
    MODEL_SERVER: "DOCPIPE_MODEL_SERVER_PORT",
}
DEFAULT_PORTS = {
    "ingest": 8000,
    "progress": 8001,
    "extractor": 9101,
    "ocr": 9102,
    "analyzer": 9103,
    MODEL_SERVER: 9180,
}

# Ports for stacks started by tests and benchmarks come from below Linux's ephemeral range
# (32768-60999 by default). A port taken with bind(0) and released lies inside that range, so
# any outgoing connection (to RabbitMQ, PostgreSQL, another service) may take it before the
# service binds it, and two bind(0) calls in a row may hand out the same port
# (docs/decisions/0003).
_PORT_RANGE = (20000, 32000)


def free_ports(count: int) -> list[int]:
    """`count` distinct ports on 127.0.0.1 that were free a moment ago, outside the ephemeral
    range. All are held open together while choosing, so no two are the same."""
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", random.randrange(*_PORT_RANGE)))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        return [int(sock.getsockname()[1]) for sock in held]
    finally:
        for sock in held:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def default_services(env: dict[str, str]) -> tuple[str, ...]:
    """The five services, and the local model server unless DOCPIPE_LLM_BASE_URL names
    another model server."""
    return SERVICES if env.get("DOCPIPE_LLM_BASE_URL") else (*SERVICES, MODEL_SERVER)


def admin_amqp_url(env: dict[str, str]) -> str:
    return env.get("DOCPIPE_AMQP_URL") or str(Settings.model_fields["amqp_url"].default)


def service_amqp_urls(env: dict[str, str]) -> dict[str, str]:
    """Each service's AMQP URL: the broker of DOCPIPE_AMQP_URL, as the service's own user,
    with its password from DOCPIPE_AMQP_PASSWORD_<USER> or else the development one."""
    if env.get("DOCPIPE_AMQP_SERVICE_USERS", "").strip().lower() in ("off", "0", "false"):
        return {}
    urls = {}
    for name in SERVICES:
        user = service_user(name)
        secret = env.get("DOCPIPE_AMQP_PASSWORD_" + user.upper().replace("-", "_"))
        urls[name] = url_with_user(admin_amqp_url(env), user, secret or dev_password(user))
    return urls


def stack_topology(env: dict[str, str]) -> Topology:
    """The topology the stack's services use (their prefix and retry delays)."""
    delays = env.get("DOCPIPE_RETRY_DELAYS_MS")
    queue_type = env.get("DOCPIPE_QUEUE_TYPE") or "classic"
    if queue_type not in ("classic", "quorum"):
        raise ValueError(f"DOCPIPE_QUEUE_TYPE={queue_type!r}: expected classic or quorum")
    return Topology(
        env.get("DOCPIPE_BUS_PREFIX") or "docpipe",
        tuple(json.loads(delays)) if delays else tuple(Settings.model_construct().retry_delays_ms),
        "quorum" if queue_type == "quorum" else "classic",
    )


def command(name: str, port: int) -> list[str]:
    """How a stack process is started (with the stack's environment)."""
    if name == MODEL_SERVER:
        return [sys.executable, "-m", "scripts.model_server", "--port", str(port)]
    return [sys.executable, "-m", f"services.{name}"]


def stack_ports() -> dict[str, str]:
    """A distinct free port for every service, as the environment variables that set them."""
    return dict(zip(PORT_SETTINGS.values(), map(str, free_ports(len(PORT_SETTINGS))), strict=True))


# A service that exits after running this long is restarted after RESTART_DELAY; one that
# exits sooner waits longer and longer between restarts (see Stack._watch).
STABLE_SECONDS = 30.0
RESTART_DELAY = 0.5


class _ExitedEarly(Exception):
    """A service exited less than STABLE_SECONDS after it started."""


@dataclass
class ServiceProcess:
    name: str
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    exits: list[int] = field(default_factory=list)


class Stack:
    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        services: tuple[str, ...] | None = None,
        log_dir: Path | None = None,
        restart: bool = True,
    ) -> None:
        """`services`: default_services(env). With the model server in the stack, the
        analyzer is pointed at it unless DOCPIPE_LLM_BASE_URL says otherwise."""
        self.env = {"DOCPIPE_ENV": "dev", **os.environ, **(env or {})}
        if "DOCPIPE_DATABASE_URL" not in self.env:
            development = Settings.model_fields["database_url"].default
            self.env["DOCPIPE_DATABASE_URL"] = with_role(development, *DEV_RUNTIME_ROLE)
            self.env.setdefault(
                "DOCPIPE_MIGRATE_DATABASE_URL", with_role(development, *DEV_OWNER_ROLE)
            )
        # The owner's URL stays with the stack: no service process holds it.
        self.migrate_url = self.env.pop("DOCPIPE_MIGRATE_DATABASE_URL", None)
        services = services if services is not None else default_services(self.env)
        self.services = {name: ServiceProcess(name) for name in services}
        if MODEL_SERVER in self.services and not self.env.get("DOCPIPE_LLM_BASE_URL"):
            self.env["DOCPIPE_LLM_BASE_URL"] = f"{self.url(MODEL_SERVER)}/v1"
        self.amqp_urls = service_amqp_urls(self.env)
        self.log_dir = log_dir
        self.restart = restart
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []
        self._logs: dict[str, IO[bytes]] = {}

    def port(self, name: str) -> int:
        return int(self.env.get(PORT_SETTINGS[name], DEFAULT_PORTS[name]))

    def url(self, name: str) -> str:
        host = self.env.get("DOCPIPE_HOST", "127.0.0.1")
        return f"http://{host}:{self.port(name)}"

    async def _spawn(self, svc: ServiceProcess) -> None:
        out: int | IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            if svc.name not in self._logs:
                self._logs[svc.name] = open(self.log_dir / f"{svc.name}.log", "ab")  # noqa: SIM115
            out = self._logs[svc.name]
        env = self.env
        if svc.name in self.amqp_urls:  # its own user; the stack declared the topology
            url = self.amqp_urls[svc.name]
            env = {**env, "DOCPIPE_AMQP_URL": url, "DOCPIPE_DECLARE_TOPOLOGY": "false"}
        svc.proc = await asyncio.create_subprocess_exec(
            *command(svc.name, self.port(svc.name)),
            env=env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT if out is not None else None,
        )

    async def _watch(self, svc: ServiceProcess) -> None:
        """Restart the service whenever it exits, until the stack stops: RESTART_DELAY after
        a run of STABLE_SECONDS or more, else after a wait that doubles from 1 s up to 10 s,
        so a service that dies straight after starting (e.g. broker down) does not spin."""
        while True:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_ExitedEarly),
                wait=wait_exponential(multiplier=1, max=10),
            ):
                with attempt:
                    if attempt.retry_state.attempt_number > 1 and not await self._restart(svc):
                        return
                    if not await self._ran_until_exit(svc):
                        return
            await asyncio.sleep(RESTART_DELAY)
            if not await self._restart(svc):
                return

    async def _ran_until_exit(self, svc: ServiceProcess) -> bool:
        """Wait for the service to exit: False when it is not to be restarted (the stack is
        stopping, or restarts are off), _ExitedEarly when it ran under STABLE_SECONDS."""
        assert svc.proc is not None
        started = time.monotonic()
        rc = await svc.proc.wait()
        if self._stopping:
            return False
        svc.exits.append(rc)
        print(f"[stack] {svc.name} exited with {rc}", file=sys.stderr, flush=True)
        if not self.restart:
            return False
        if time.monotonic() - started < STABLE_SECONDS:
            raise _ExitedEarly(svc.name)
        return True

    async def _restart(self, svc: ServiceProcess) -> bool:
        """Start the service again, unless the stack is stopping (then False)."""
        if self._stopping:
            return False
        svc.restarts += 1
        print(f"[stack] restarting {svc.name} (restart #{svc.restarts})", file=sys.stderr)
        await self._spawn(svc)
        return True

    async def start(self) -> None:
        if self.migrate_url:
            try:
                await prepare_database(self.migrate_url, self.env["DOCPIPE_DATABASE_URL"])
            except asyncpg.InvalidAuthorizationSpecificationError as exc:
                raise RuntimeError(
                    f"PostgreSQL refused the stack's roles ({exc}): create them with "
                    "scripts/postgres_roles.sh (make services)"
                ) from exc
        if self.amqp_urls:  # the services' users may not declare what they do not own
            await declare_topology_at(admin_amqp_url(self.env), stack_topology(self.env))
        for svc in self.services.values():
            await self._spawn(svc)
            self._watchers.append(asyncio.create_task(self._watch(svc)))

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.services)
        async with httpx.AsyncClient(timeout=2.0) as client:
            while pending:
                for name in list(pending):
                    with contextlib.suppress(httpx.HTTPError):
                        response = await client.get(f"{self.url(name)}/readyz")
                        if response.status_code == 200:
                            await self._check_identity(client, name)
                            pending.discard(name)
                if not pending:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"services not ready after {timeout:g} s: {sorted(pending)}")
                await asyncio.sleep(0.2)

    async def _check_identity(self, client: httpx.AsyncClient, name: str) -> None:
        """Fail loudly when something other than `name` answers on its port."""
        answer = (await client.get(f"{self.url(name)}/healthz")).json()
        if answer.get("service") != name:
            raise RuntimeError(
                f"port {self.port(name)} is answered by {answer.get('service')!r}, not {name!r}"
            )

    def signal(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.services[name].proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(sig)

    async def stop(self, timeout: float = 20.0) -> None:
        self._stopping = True
        procs = [s.proc for s in self.services.values() if s.proc and s.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), timeout)
        except TimeoutError:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await asyncio.gather(*(p.wait() for p in procs))
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        for fh in self._logs.values():
            fh.close()

    def deaths(self) -> dict[str, list[int]]:
        return {name: svc.exits for name, svc in self.services.items() if svc.exits}

    def replica(
        self,
        services: tuple[str, ...] | None = None,
        *,
        log_dir: Path | None = None,
        restart: bool | None = None,
    ) -> Stack:
        """Another set of this stack's services (all but the model server, unless named) on
        the same database, bus prefix and blob folder, on ports of its own: replicas, as a
        deployment scales them. Start it after this stack, which migrated and declared the
        topology; its analyzer uses this stack's model server."""
        # Without the owner's URL: the replica migrates nothing (this stack did).
        env = {**self.env, **stack_ports()}
        names = services or tuple(name for name in self.services if name != MODEL_SERVER)
        return Stack(
            env,
            services=names,
            log_dir=log_dir,
            restart=self.restart if restart is None else restart,
        )


async def _main(replicas: int) -> None:
    stack = Stack()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stack.start()
    stacks = [stack]
    for _ in range(replicas - 1):  # after the first: it migrated and declared the topology
        stacks.append(stack.replica())
        await stacks[-1].start()
    try:
        for running in stacks:
            await running.wait_ready(120)
            model = MODEL_SERVER in running.services
            print(
                f"[stack] all services ready: API {running.url('ingest')}, progress and admin "
                f"{running.url('progress')}"
                f"{f', model server {running.url(MODEL_SERVER)}' if model else ''}"
                " — Ctrl-C stops them",
                file=sys.stderr,
                flush=True,
            )
    except TimeoutError as exc:
        print(f"[stack] {exc}; still trying (Ctrl-C to stop)", file=sys.stderr)
    await stop.wait()
    print("[stack] stopping…", file=sys.stderr, flush=True)
    await asyncio.gather(*(running.stop() for running in stacks))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run docpipe's services as local processes.")
    parser.add_argument(
        "--replicas",
        type=int,
        default=int(os.environ.get("DOCPIPE_STACK_REPLICAS", "1")),
        help="sets of the five services, each on ports of its own (default 1)",
    )
    asyncio.run(_main(max(1, parser.parse_args().replicas)))
