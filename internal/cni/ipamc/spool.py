"""Releases that could not reach tke-ipamd, kept on disk until they can.

A DEL must succeed once the runtime tears a container down, even while ipamd is unreachable;
it does so only after the release is durably queued here (one file per attachment, written
atomically). Every later tke-ipamc call that reaches ipamd replays the queue (ADD first
replays the entry of its own attachment, so a queued release can never free a newer
allocation of the same container id and interface). ipamd's garbage collection reclaims
anything the queue loses.
"""

from __future__ import annotations

import os
import time

from tke.internal.cni import atomicfile
from tke.internal.cni import jsonio as json
from tke.internal.cni.record import Record
from tke.internal.cni.skel import warn


class QueuedRelease(Record):
    container_id: str
    ifname: str
    pod_uid: str
    ipamd: str  # the address it is for
    queued: float


class ReleaseSpool:
    def __init__(self, folder: str) -> None:
        self.folder = folder

    def _path(self, container_id: str, ifname: str) -> str:
        return os.path.join(self.folder, f"{container_id}={ifname}.json")

    def put(self, release: QueuedRelease) -> str:
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        path = self._path(release.container_id, release.ifname)
        atomicfile.write_atomic(path, json.dumps(release.as_dict()).encode())
        return path

    def get(self, container_id: str, ifname: str) -> QueuedRelease | None:
        return self._load(self._path(container_id, ifname))

    def remove(self, container_id: str, ifname: str) -> None:
        atomicfile.remove(self._path(container_id, ifname))

    def pending(self) -> list[QueuedRelease]:
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.endswith(".json") and not name.startswith("."):
                found = self._load(os.path.join(self.folder, name))
                if found is not None:
                    out.append(found)
        return out

    def _load(self, path: str) -> QueuedRelease | None:
        raw = atomicfile.read(path)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return QueuedRelease(
                container_id=str(data["container_id"]),
                ifname=str(data["ifname"]),
                pod_uid=str(data.get("pod_uid", "")),
                ipamd=str(data.get("ipamd", "")),
                queued=float(data.get("queued", time.time())),
            )
        except (ValueError, KeyError, TypeError) as err:
            warn(f"ignoring unreadable queued release {path}: {err}")
            return None
