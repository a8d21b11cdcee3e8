"""RabbitMQ that survives a node: a three-node cluster started here with the installed
rabbitmq-server (own names, ports, data and cookie in a temporary directory; the shared broker
is not touched), docpipe on quorum queues against it, and the node that leads every queue
killed in the middle of the load. Every job still completes, with every page, and nothing is
left in a queue or a dead-letter queue.

The services connect to a node that is not killed: a deployment puts one address in front of
the cluster (a Kubernetes Service, a load balancer) and the robust connection reconnects
through it; what is tested here is the queues' failover (the leader moves, the followers keep
every message). docs/decisions/1090-quorum-queues-urgent-lanes.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shared.bus.publisher import declare_topology_at
from shared.settings import Settings
from shared.topology import Topology
from tests.conftest import unavailable
from tests.fixtures import pdf_with_pages
from tests.reliability.conftest import (
    SHORT_RETRIES_MS,
    ReliabilityStack,
    StackFactory,
    rabbit_up,
)

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
# Debian's unwrapped scripts: the wrappers on PATH switch to the rabbitmq user and its home,
# which would lose the cluster's own cookie.
RABBIT_BIN = Path(os.environ.get("DOCPIPE_TEST_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
BOOT_SECONDS = 90.0
JOBS = 16
# Every fourth job at priority 5 (the small-job priority: the urgent lane; a tenant's ceiling
# is 5 by default): the urgent lanes carry load too.
URGENT_EVERY = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    name: str
    amqp_port: int
    dist_port: int
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"


@dataclass
class Cluster:
    """Three RabbitMQ nodes on this host, each its own process group (killed as such)."""

    home: Path
    nodes: list[Node] = field(default_factory=list)

    def env(self, node: Node) -> dict[str, str]:
        base = self.home / node.name.split("@")[0]
        return {
            **os.environ,
            "HOME": str(self.home),  # its .erlang.cookie: one cookie for nodes and CLI
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_PORT": str(node.amqp_port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),  # none
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
        }

    def write_config(self, node: Node, first: Node) -> None:
        """The first node loads the docpipe users (least privilege over the queue names) as a
        deployment does; the others join it as they boot (no stop/join/start round)."""
        base = self.home / node.name.split("@")[0]
        base.mkdir(parents=True, exist_ok=True)
        if node is first:
            lines = [f"load_definitions = {DEFINITIONS}"]
        else:
            lines = [
                "cluster_formation.peer_discovery_backend = classic_config",
                f"cluster_formation.classic_config.nodes.1 = {first.name}",
            ]
        (base / "rabbitmq.conf").write_text("\n".join(lines) + "\n")

    async def ctl(self, node: Node, *args: str, timeout: float = 60.0) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(RABBIT_BIN / "rabbitmqctl"),
            "-n",
            node.name,
            *args,
            env=self.env(node),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {node.name}: {text[-600:]}")
        return text

    async def start(self) -> None:
        (self.home / ".erlang.cookie").write_text(f"DOCPIPEQUORUM{os.getpid()}")
        (self.home / ".erlang.cookie").chmod(0o600)
        (self.home / "enabled_plugins").write_text("[].\n")
        run = f"{os.getpid()}"
        for i in range(3):
            self.nodes.append(Node(f"docpipe_q{run}_{i}@localhost", free_port(), free_port()))
        first = self.nodes[0]
        for node in self.nodes:
            self.write_config(node, first)
        await self.boot(first)
        await asyncio.gather(*(self.boot(node) for node in self.nodes[1:]))

    async def boot(self, node: Node) -> None:
        """Start the node and wait until it takes AMQP connections (polled: the CLI's
        await_startup checks only every ten seconds)."""
        log = (self.home / f"{node.name.split('@')[0]}.out").open("wb")
        node.process = await asyncio.create_subprocess_exec(
            str(RABBIT_BIN / "rabbitmq-server"),
            env=self.env(node),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: the VM dies with it
        )
        async with asyncio.timeout(BOOT_SECONDS):
            while not await rabbit_up(node.url):
                if node.process.returncode is not None:
                    raise RuntimeError(f"{node.name} exited {node.process.returncode}")
                await asyncio.sleep(0.3)

    async def running_nodes(self, via: Node) -> list[str]:
        status = json.loads(await self.ctl(via, "cluster_status", "--formatter", "json"))
        return sorted(status.get("running_nodes", []))

    async def leaders(self, via: Node, prefix: str) -> dict[str, str]:
        """Queue name -> the node leading it, for the quorum queues of the prefix."""
        text = await self.ctl(
            via, "list_queues", "-q", "name", "type", "leader", "--formatter", "json"
        )
        return {
            q["name"]: q["leader"]
            for q in json.loads(text)
            if q["name"].startswith(prefix + ".") and q["type"] == "quorum"
        }

    async def depths(self, via: Node, prefix: str) -> dict[str, int]:
        text = await self.ctl(via, "list_queues", "-q", "name", "messages", "--formatter", "json")
        return {
            q["name"]: int(q["messages"])
            for q in json.loads(text)
            if q["name"].startswith(prefix + ".")
        }

    def kill(self, node: Node) -> None:
        """SIGKILL the node's process group: a crash, no graceful hand-over."""
        if node.process is not None and node.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)

    async def stop(self) -> None:
        for node in self.nodes:
            self.kill(node)
        for node in self.nodes:
            if node.process is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(node.process.wait(), 20)


@pytest.fixture
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    if not (RABBIT_BIN / "rabbitmq-server").exists():
        unavailable(f"rabbitmq-server not found in {RABBIT_BIN} (DOCPIPE_TEST_RABBITMQ_BIN)")
    # A short path: Erlang's data paths and the cookie's home live there.
    home = Path(tmp_path_factory.mktemp("rmq"))
    running = Cluster(home)
    try:
        try:
            await running.start()
            nodes = await running.running_nodes(running.nodes[1])
        except (RuntimeError, TimeoutError, OSError) as exc:
            unavailable(f"a three-node RabbitMQ cluster could not start here: {exc}")
        if len(nodes) != 3:
            unavailable(f"the cluster formed with {nodes}, not three nodes")
        yield running
    finally:
        await running.stop()
        shutil.rmtree(home, ignore_errors=True)


def documents(tmp: Path) -> list[tuple[Path, list[str], int]]:
    """(pdf, the text of each page, priority): multi-page jobs, a quarter of them urgent."""
    out = []
    for i in range(JOBS):
        pages = [
            f"Quorum job {i} page {n} carries order {7000 + 10 * i + n}."
            for n in range(1, 4 + i % 4)
        ]
        priority = 5 if i % URGENT_EVERY == 0 else 0
        out.append((pdf_with_pages(tmp / f"quorum{i:02d}.pdf", pages), pages, priority))
    return out


async def test_jobs_complete_when_the_node_leading_the_queues_dies(
    cluster: Cluster, private_stack: StackFactory, test_settings: Settings, tmp_path: Path
) -> None:
    leader_node, stack_node, witness = cluster.nodes
    # The stack's topology (private_stack names its prefix so), declared first through the
    # node to be killed: a quorum queue's leader starts on the declaring client's node, and
    # the stack's own declaration through another node changes nothing.
    topo = Topology(f"{test_settings.bus_prefix}_quorum", SHORT_RETRIES_MS, "quorum")
    await declare_topology_at(leader_node.url, topo)
    leaders = await cluster.leaders(witness, topo.prefix)
    assert sorted(leaders) == sorted(topo.all_queue_names()), leaders
    assert set(leaders.values()) == {leader_node.name}, leaders
    env = {
        "DOCPIPE_AMQP_URL": stack_node.url,
        "DOCPIPE_QUEUE_TYPE": "quorum",
        # No AI analysis in these jobs: the stack need not start the local model server.
        "DOCPIPE_LLM_BASE_URL": "http://127.0.0.1:9/v1",
    }
    async with private_stack("quorum", env=env) as rs:
        assert rs.settings.bus_prefix == topo.prefix
        jobs = documents(tmp_path)
        submitted = await asyncio.gather(
            *(rs.client.submit_ok(path, priority=priority) for path, _, priority in jobs)
        )
        # Mid-load: some jobs done, most not.
        await wait_some_terminal(rs, submitted, at_least=2)
        cluster.kill(leader_node)
        statuses = await rs.wait_all(submitted, timeout=150)
        failed = {j: s for j, s in statuses.items() if s[0] != "completed"}
        assert not failed, failed
        for job_id, (_, pages, _) in zip(submitted, jobs, strict=True):
            await assert_every_page(rs, job_id, pages)
        survivors = await cluster.running_nodes(witness)
        assert leader_node.name not in survivors and len(survivors) == 2, survivors
        new_leaders = await cluster.leaders(witness, topo.prefix)
        assert sorted(new_leaders) == sorted(topo.all_queue_names()), new_leaders
        assert leader_node.name not in new_leaders.values(), new_leaders
        depths = await settled_depths(cluster, witness, topo.prefix)
        assert not any(depths.values()), depths  # nothing stuck, nothing dead-lettered


async def assert_every_page(rs: ReliabilityStack, job_id: str, pages: list[str]) -> None:
    result = (await rs.client.result(job_id)).json()
    texts = [" ".join(str(p["text"]).split()) for p in result["pages"]]
    assert len(texts) == len(pages), (job_id, texts)
    for text, page in zip(texts, pages, strict=True):
        assert page in text, (job_id, text, page)


async def wait_some_terminal(rs: ReliabilityStack, job_ids: list[str], at_least: int) -> None:
    async with asyncio.timeout(120):
        while True:
            statuses = await rs.job_statuses(job_ids)
            done = [j for j, (status, _) in statuses.items() if status in ("completed", "failed")]
            if len(done) >= at_least:
                assert len(done) < len(job_ids), "the load ended before the node could be killed"
                return
            await asyncio.sleep(0.2)


async def settled_depths(cluster: Cluster, via: Node, prefix: str) -> dict[str, int]:
    """The queues' depths once they drained (the last jobs' final events may still be on
    their way to progress when the jobs read as completed)."""
    depths: dict[str, int] = {}
    for _ in range(30):
        depths = await cluster.depths(via, prefix)
        if not any(depths.values()):
            break
        await asyncio.sleep(1)
    return depths
