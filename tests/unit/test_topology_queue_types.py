"""The topology on either queue type: classic declares what it always did (priority queues);
quorum declares replicated queues, an urgent and a bulk lane per worker group, and every name
stays inside the service users' permission regexes (deploy/rabbitmq/definitions.json, written
by scripts/rabbitmq_users.sh)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.settings import Settings
from shared.topology import (
    ANALYZER,
    DELIVERY_LIMIT,
    EXTRACTOR,
    GROUPS,
    MAX_PRIORITY,
    OCR,
    PROGRESS,
    Topology,
)

DEFINITIONS = Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq" / "definitions.json"
DELAYS = (200, 500)


def test_classic_is_as_before() -> None:
    topo = Topology("docpipe", DELAYS)
    work = topo.work_queue(EXTRACTOR)
    assert work.name == "docpipe.extractor"
    assert work.arguments == {
        "x-dead-letter-exchange": "docpipe.dlx",
        "x-dead-letter-routing-key": "extractor",
        "x-max-priority": MAX_PRIORITY,
    }
    assert work.exchanges == ("docpipe",)
    assert topo.lanes(EXTRACTOR) == ("bulk",)
    assert topo.event_exchanges == ("docpipe",)
    assert topo.exchange_for(9) == "docpipe"
    assert topo.dead_letter_queue(OCR).arguments == {}
    assert topo.retry_queue(OCR, 500).arguments == {
        "x-message-ttl": 500,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "docpipe.ocr",
    }
    assert topo.all_queue_names()[:4] == [
        "docpipe.extractor",
        "docpipe.extractor.dlq",
        "docpipe.extractor.retry.200",
        "docpipe.extractor.retry.500",
    ]
    assert len(topo.all_queue_names()) == len(GROUPS) * (2 + len(DELAYS))


def test_quorum_lanes_route_by_priority() -> None:
    topo = Topology("docpipe", DELAYS, "quorum", urgent_priority=5)
    assert topo.event_exchanges == ("docpipe", "docpipe.urgent")
    assert [topo.exchange_for(p) for p in (None, 0, 4, 5, 9)] == [
        "docpipe",
        "docpipe",
        "docpipe",
        "docpipe.urgent",
        "docpipe.urgent",
    ]
    for group in (EXTRACTOR, OCR, ANALYZER):
        assert topo.lanes(group) == ("urgent", "bulk")  # urgent consumed first
        urgent, bulk = topo.work_queue(group, "urgent"), topo.work_queue(group, "bulk")
        assert (urgent.name, bulk.name) == (f"docpipe.{group.name}.urgent", f"docpipe.{group.name}")
        assert urgent.exchanges == ("docpipe.urgent",) and bulk.exchanges == ("docpipe",)
        assert urgent.binding_keys == bulk.binding_keys == group.binding_keys
        for spec in (urgent, bulk):
            assert spec.arguments["x-queue-type"] == "quorum"
            assert spec.arguments["x-delivery-limit"] == DELIVERY_LIMIT
            assert spec.arguments["x-dead-letter-routing-key"] == group.name
            assert "x-max-priority" not in spec.arguments
        # A retry goes back into the lane it came from.
        retry = topo.retry_queue(group, 200, "urgent")
        assert retry.name == f"docpipe.{group.name}.urgent.retry.200"
        assert retry.arguments["x-dead-letter-routing-key"] == urgent.name
        assert retry.arguments["x-queue-type"] == "quorum"
    dlq = topo.dead_letter_queue(EXTRACTOR)
    assert dlq.arguments == {"x-queue-type": "quorum"}  # no delivery limit on dead letters


def test_quorum_progress_has_one_queue_on_both_exchanges() -> None:
    topo = Topology("docpipe", DELAYS, "quorum")
    assert topo.lanes(PROGRESS) == ("bulk",)
    spec = topo.work_queue(PROGRESS)
    assert spec.name == "docpipe.progress"
    assert spec.exchanges == ("docpipe", "docpipe.urgent")
    assert topo.retry_queue_name(PROGRESS, 200, topo.lane_of(9)) == "docpipe.progress.retry.200"
    names = topo.all_queue_names()
    assert len(names) == len(set(names)) == len(GROUPS) * (2 + len(DELAYS)) + 3 * (1 + len(DELAYS))


def test_settings_choose_the_queue_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCPIPE_QUEUE_TYPE", "quorum")
    monkeypatch.setenv("DOCPIPE_SMALL_JOB_PRIORITY", "3")
    topo = Topology.from_settings(Settings())
    assert topo.quorum and topo.urgent_priority == 3
    assert topo.lane_of(3) == "urgent" and topo.lane_of(2) == "bulk"
    monkeypatch.setenv("DOCPIPE_QUEUE_TYPE", "mirrored")
    with pytest.raises(ValueError, match="queue_type"):
        Settings()


def _permissions() -> dict[str, dict[str, str]]:
    definitions = json.loads(DEFINITIONS.read_text())
    return {p["user"]: p for p in definitions["permissions"]}


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_service_users_may_use_every_name(queue_type: str) -> None:
    """Each worker may configure and read its own queues (both lanes), and every service may
    publish on every event exchange: what the regexes allow, checked against the topology."""
    topo = Topology("docpipe_test_1", DELAYS, "quorum" if queue_type == "quorum" else "classic")
    perms = _permissions()
    for group in GROUPS:
        user = perms[f"docpipe-{group.name}"]
        own = [topo.dlq_name(group)]
        for lane in topo.lanes(group):
            own.append(topo.queue_name(group, lane))
            own += [topo.retry_queue_name(group, d, lane) for d in DELAYS]
            assert re.search(user["read"], topo.queue_name(group, lane)), (group.name, lane)
        for name in own:
            assert re.search(user["configure"], name), (group.name, name)
        for other in GROUPS:
            if other is not group:
                assert not re.search(user["configure"], topo.queue_name(other, "urgent"))
    for service in ("ingest", "extractor", "ocr", "analyzer", "progress"):
        for exchange in topo.event_exchanges:
            assert re.search(perms[f"docpipe-{service}"]["write"], exchange), (service, exchange)
    for upstream in ("upstream-dev", "upstream-other"):
        assert not re.search(perms[upstream]["write"], topo.queue_name(EXTRACTOR, "urgent"))
