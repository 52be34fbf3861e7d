"""Benchmarks run inside a guest: one package per workload (C sources, driver, result parser).

A workload's driver talks to the guest only through :class:`~.protocol.Remote`, which both
the SSH connection and :class:`~.fake.FakeRemote` (the host itself, for tests) provide.
"""

from .protocol import Remote, RemoteAdapter

__all__ = ["Remote", "RemoteAdapter"]
