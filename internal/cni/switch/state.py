"""Which network each attachment (container id + interface) of one cni-switch network got, so
that DEL, CHECK and GC reach the delegate that ADD used, even after the configuration changed.

Invariants:
- A record is written, durably, *before* the delegated ADD runs (phase "adding") and updated
  with the result after it (phase "added"): a crash between the two still leaves a record that
  DEL and GC act on. A record is removed only after its delegate's DEL succeeded.
- Only the "adding" write waits for the directory's sync. A crash of the node, the only one that
  can undo the other two, also ends every container: an update to "added" undone leaves the
  "adding" record, which GC acts on as on any; a removal undone brings back a record whose DEL,
  which GC repeats, is idempotent. (Each file's content is synced before its rename in every
  case, so a record is never read half-written.)
- One file per attachment, `<container id>=<ifname>.json` (a container id has no '='), written
  atomically; readers take no lock. The runtime never runs two verbs for one container at once,
  so one attachment has one writer at a time.
- A record keeps the delegate network's configuration as it was at ADD.
- `ipam` says who releases the address of a delegate whose IPAM is tke-ipamc: "" the delegate
  (it ran tke-ipamc), "switch" cni-switch (it allocated from tke-ipamd itself and ran the delegate
  with `static`: see tke.internal.cni.switch.inline), "released" nobody any more (cni-switch's
  release is done or queued; only the delegate's DEL is left). It is "switch" from before the
  allocation until the release, so a crash, a failed ADD or a failed DEL leave a record whose
  DEL or GC releases, and only once.
"""

from __future__ import annotations

import os
import time

from tke.internal.cni import atomicfile
from tke.internal.cni import jsonio as json
from tke.internal.cni.record import Record
from tke.internal.cni.skel import warn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

ADDING = "adding"
ADDED = "added"
# Attachment.ipam
DELEGATE_IPAM = ""
SWITCH_IPAM = "switch"
RELEASED_IPAM = "released"


class Attachment(Record):
    container_id: str
    ifname: str
    network: dict[str, Any]  # the delegate network (Network.to_json()) as used at ADD
    phase: str = ADDING
    cni_version: str = ""
    netns: str = ""
    args: str = ""  # CNI_ARGS as handed to the delegate
    result: dict[str, Any] | None = None
    updated: float = 0.0
    ipam: str = DELEGATE_IPAM  # who releases the address (see the module docstring)

    @property
    def network_key(self) -> str:
        return str(self.network.get("key", ""))

    def added(self, result: dict[str, Any]) -> Attachment:
        return self.replace(phase=ADDED, result=result, updated=time.time())

    def to_json(self) -> dict[str, Any]:
        return {
            "containerID": self.container_id,
            "ifname": self.ifname,
            "network": self.network,
            "phase": self.phase,
            "cniVersion": self.cni_version,
            "netns": self.netns,
            "args": self.args,
            "result": self.result,
            "updated": self.updated,
            "ipam": self.ipam,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attachment:
        return cls(
            container_id=str(data["containerID"]),
            ifname=str(data["ifname"]),
            network=dict(data["network"]),
            phase=str(data.get("phase", ADDING)),
            cni_version=str(data.get("cniVersion", "")),
            netns=str(data.get("netns", "")),
            args=str(data.get("args", "")),
            result=data.get("result"),
            updated=float(data.get("updated", 0.0)),
            ipam=str(data.get("ipam", DELEGATE_IPAM)),
        )


if TYPE_CHECKING:

    class AttachmentStore(Protocol):
        def get(self, container_id: str, ifname: str) -> Attachment | None: ...

        def put(self, attachment: Attachment) -> None: ...

        def remove(self, container_id: str, ifname: str) -> None: ...

        def list(self) -> list[Attachment]: ...


class DiskStore:
    """Records under `<stateDir>/<cni-switch network name>/attachments/`."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def _path(self, container_id: str, ifname: str) -> str:
        return os.path.join(self.folder, f"{container_id}={ifname}.json")

    def get(self, container_id: str, ifname: str) -> Attachment | None:
        return self._load(self._path(container_id, ifname))

    def put(self, attachment: Attachment) -> None:
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        data = json.dumps(attachment.to_json()).encode()
        durable = attachment.phase == ADDING  # see the module docstring
        atomicfile.write_atomic(self._path(attachment.container_id, attachment.ifname), data, durable=durable)

    def remove(self, container_id: str, ifname: str) -> None:
        atomicfile.remove(self._path(container_id, ifname), durable=False)  # see the module docstring

    def list(self) -> list[Attachment]:
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if name.startswith(".") or not name.endswith(".json"):
                continue
            record = self._load(os.path.join(self.folder, name))
            if record is not None:
                found.append(record)
        return found

    def sweep_temporary(self, older_than: float) -> None:
        """Remove temporary files a crashed writer left behind."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return
        now = time.time()
        for name in names:
            path = os.path.join(self.folder, name)
            try:
                if name.startswith(".") and now - os.stat(path).st_mtime > older_than:
                    os.unlink(path)
            except OSError:
                pass

    def _load(self, path: str) -> Attachment | None:
        raw = atomicfile.read(path)
        if raw is None:
            return None
        try:
            return Attachment.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as err:
            warn(f"ignoring unreadable state record {path}: {err}")
            return None
