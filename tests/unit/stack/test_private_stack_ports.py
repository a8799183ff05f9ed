"""A private stack's stage ports stay clear of a dev stack's and of the kernel's ephemeral range."""

from __future__ import annotations

from pathlib import Path

from radalign.pipeline import GRAPH
from radalign.testing.stack import free_web_port_offset


def _ephemeral_low() -> int:
    path = Path("/proc/sys/net/ipv4/ip_local_port_range")
    return int(path.read_text().split()[0]) if path.exists() else 32768


def test_stage_ports_sit_between_the_dev_defaults_and_the_ephemeral_range() -> None:
    highest_default = max(s.web_port for s in GRAPH)
    for _ in range(20):
        offset = free_web_port_offset()
        ports = [s.web_port + offset for s in GRAPH]
        assert min(ports) > highest_default and max(ports) < _ephemeral_low(), (offset, ports)
