"""An in-memory double of cni-switch's attachment store (tke.internal.cni.switch.state), for
tests of the verbs without a disk."""

from __future__ import annotations

from tke.internal.cni.switch.state import Attachment


class MemoryStore:
    """The same contract in memory, for tests of the verbs without a disk."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], Attachment] = {}

    def get(self, container_id: str, ifname: str) -> Attachment | None:
        return self.records.get((container_id, ifname))

    def put(self, attachment: Attachment) -> None:
        self.records[(attachment.container_id, attachment.ifname)] = attachment

    def remove(self, container_id: str, ifname: str) -> None:
        self.records.pop((container_id, ifname), None)

    def list(self) -> list[Attachment]:
        return [self.records[k] for k in sorted(self.records)]
