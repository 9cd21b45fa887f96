"""tke-ipamc's verbs: ADD allocates from tke-ipamd for the owner CNI_ARGS names, DEL releases
(queueing the release durably when ipamd cannot be reached), CHECK verifies the allocation,
GC asks ipamd to collect this node's stale allocations, STATUS asks ipamd's health.

Error contract: ipamd unreachable is code 11 on ADD, CHECK, GC and STATUS (50 on STATUS); DEL
succeeds once the release is done or queued (code 11 only if it cannot even be queued). An
exhausted pool is code 102, another refusal 103 (a denial with ipamd's reason, its ErrorInfo's,
and message in msg: a node's ipamd refusing another node's `node`), a bad request from our
configuration 7.
"""

from __future__ import annotations

import os
import time

from tke.internal.cni import ipamwire as wire
from tke.internal.cni.errors import (
    INVALID_NETWORK_CONFIG,
    IPAM_REFUSED,
    NOT_AVAILABLE,
    POOL_EXHAUSTED,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    CNIError,
)
from tke.internal.cni.ipamc.config import IpamcConfig
from tke.internal.cni.ipamc.result import addresses, ipam_result
from tke.internal.cni.ipamc.spool import QueuedRelease, ReleaseSpool
from tke.internal.cni.ipamdclient import IpamdClient, IpamdRefused, IpamdUnreachable
from tke.internal.cni.owner import DEFAULT_NAMESPACE, PodOwner, bare_pod_name
from tke.internal.cni.skel import Request, valid_attachments, warn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from tke.internal.cni.skel import Handler

POLICIES = {
    "podDelete": wire.POD_DELETE,
    "immutable": wire.IMMUTABLE,
    "never": wire.NEVER,
}
REPLAY_BUDGET_SECONDS = 1.0
RETRY_PAUSE_SECONDS = 0.2


def refused(err: IpamdRefused, what: str) -> CNIError:
    if err.code == "RESOURCE_EXHAUSTED" and err.reason == "NODE_ALLOCATION_LIMIT":
        # Not the pool: this node holds max_allocations_per_node addresses (ipamd's message says
        # how many and which option), a refusal of this node's like NODE_RESTRICTED.
        return CNIError(IPAM_REFUSED, f"{what}: tke-ipamd refused it ({err.reason}): {err.message}", err.message)
    if err.code == "RESOURCE_EXHAUSTED":
        return CNIError(POOL_EXHAUSTED, f"{what}: no free address", err.message)
    if err.code in ("INVALID_ARGUMENT", "NOT_FOUND"):
        return CNIError(INVALID_NETWORK_CONFIG, f"{what}: tke-ipamd rejected the request", err.message)
    if err.code == "PERMISSION_DENIED":
        # Says why in msg (a node restricted to itself names both nodes), with ipamd's reason
        # (NODE_RESTRICTED, NOT_THE_PODS_WORKLOAD, POOL_NOT_ALLOWED): the runtime shows msg.
        why = f" ({err.reason})" if err.reason else ""
        return CNIError(IPAM_REFUSED, f"{what}: tke-ipamd denied it{why}: {err.message}", err.message)
    return CNIError(IPAM_REFUSED, f"{what}: tke-ipamd refused ({err.code})", err.message)


def unreachable(err: IpamdUnreachable, config: IpamcConfig, what: str) -> CNIError:
    return CNIError(TRY_AGAIN_LATER, f"{what}: tke-ipamd at {config.ipamd.address} is unreachable", str(err))


def owner_of(request: Request) -> PodOwner:
    """The owner CNI_ARGS names; a runtime that names no pod gets a bare pod per container."""
    return PodOwner.from_args(request.arg_pairs()) or PodOwner(
        namespace=DEFAULT_NAMESPACE, pod_name=bare_pod_name(request.container_id)
    )


class Ipamc:
    def __init__(self, config: IpamcConfig, connect: Callable[[], IpamdClient], spool: ReleaseSpool) -> None:
        self.config = config
        self.connect = connect
        self.spool = spool

    @classmethod
    def real(cls, request: Request) -> Ipamc:
        config = IpamcConfig.from_network(request.config, request.environ)
        return cls(config, lambda: IpamdClient(config.ipamd), ReleaseSpool(os.path.join(config.state_dir, "releases")))

    # ADD -------------------------------------------------------------------------------------

    def add(self, request: Request) -> dict[str, Any]:
        owner = owner_of(request)
        what = f"allocate for {owner.namespace}/{owner.pod_name}"
        with self.connect() as client:
            try:
                queued = self.spool.get(request.container_id, request.ifname)
                if queued is not None:
                    self._replay_one(client, queued)
                answer = client.allocate(
                    wire.encode_allocate(
                        owner=wire.encode_owner(
                            owner.namespace, owner.pod_name, owner.pod_uid, owner.workload_kind, owner.workload_name
                        ),
                        container_id=request.container_id,
                        ifname=request.ifname,
                        node=self.config.node,
                        node_ip=self.config.node_ip,
                        pool=self.config.pool,
                        release_policy=POLICIES[self.config.release_policy],
                    )
                )
            except IpamdUnreachable as err:
                raise unreachable(err, self.config, what) from None
            except IpamdRefused as err:
                raise refused(err, what) from None
            a = answer.allocation
            warn(
                f"{request.container_id}/{request.ifname}: {a.address} from pool {a.pool}"
                + (" (reused)" if answer.reused else "")
            )
            self.replay(client)
        return ipam_result(a.address, a.gateway, a.routes, a.dns)

    # DEL -------------------------------------------------------------------------------------

    def delete(self, request: Request) -> None:
        owner = PodOwner.from_args(request.arg_pairs())
        uid = owner.pod_uid if owner else ""
        deadline = time.monotonic() + self.config.release_retry_seconds
        last: IpamdUnreachable | None = None
        while True:
            try:
                with self.connect() as client:
                    client.release(request.container_id, request.ifname, uid)
                    self.spool.remove(request.container_id, request.ifname)
                    self.replay(client)
                return
            except IpamdUnreachable as err:
                last = err
            except IpamdRefused as err:
                raise refused(err, f"release {request.container_id}/{request.ifname}") from None
            if time.monotonic() + RETRY_PAUSE_SECONDS > deadline:
                break
            time.sleep(RETRY_PAUSE_SECONDS)
        release = QueuedRelease(request.container_id, request.ifname, uid, self.config.ipamd.address, time.time())
        try:
            path = self.spool.put(release)
        except OSError as err:
            raise CNIError(
                TRY_AGAIN_LATER,
                f"tke-ipamd at {self.config.ipamd.address} is unreachable and the release cannot be queued",
                f"{last}; {err}",
            ) from None
        warn(
            f"tke-ipamd at {self.config.ipamd.address} is unreachable ({last}); the release of "
            f"{request.container_id}/{request.ifname} is queued in {path} and replayed by the next "
            "tke-ipamc call or GC; ipamd's garbage collection reclaims it otherwise"
        )

    # CHECK -----------------------------------------------------------------------------------

    def check(self, request: Request) -> None:
        what = f"check {request.container_id}/{request.ifname}"
        expected = addresses(request.config.get("prevResult"))  # refused before ipamd is asked
        with self.connect() as client:
            try:
                found = client.get_allocation(request.container_id, request.ifname)
            except IpamdUnreachable as err:
                raise unreachable(err, self.config, what) from None
            except IpamdRefused as err:
                raise refused(err, what) from None
        if found is None:
            raise CNIError(UNKNOWN_CONTAINER, f"{what}: tke-ipamd has no allocation for it")
        if expected and found.address not in expected:
            raise CNIError(
                IPAM_REFUSED, f"{what}: tke-ipamd holds {found.address}, the container has {sorted(expected)}"
            )

    # GC --------------------------------------------------------------------------------------

    def gc(self, request: Request) -> None:
        valid = [(a["containerID"], a["ifname"]) for a in valid_attachments(request.config)]
        what = f"garbage collection of node {self.config.node}"
        with self.connect() as client:
            try:
                self.replay(client)
                answer = client.garbage_collect(self.config.node, valid, self.config.gc_min_age_seconds)
            except IpamdUnreachable as err:
                raise unreachable(err, self.config, what) from None
            except IpamdRefused as err:
                raise refused(err, what) from None
        for a in answer:
            warn(f"GC: released {a.address} of {a.container_id}/{a.ifname}")

    # STATUS ----------------------------------------------------------------------------------

    def status(self, request: Request) -> None:
        with self.connect() as client:
            try:
                serving = client.serving()
            except (IpamdUnreachable, IpamdRefused) as err:
                where = self.config.ipamd.address
                raise CNIError(NOT_AVAILABLE, f"tke-ipamd at {where} is unreachable", str(err)) from None
        if not serving:
            raise CNIError(NOT_AVAILABLE, f"tke-ipamd at {self.config.ipamd.address} is not serving")

    # the release queue -----------------------------------------------------------------------

    def _replay_one(self, client: IpamdClient, queued: QueuedRelease) -> None:
        client.release(queued.container_id, queued.ifname, queued.pod_uid)
        self.spool.remove(queued.container_id, queued.ifname)
        warn(f"replayed the queued release of {queued.container_id}/{queued.ifname}")

    def replay(self, client: IpamdClient) -> None:
        """Send queued releases for this ipamd, within a small time budget; what is left waits
        for the next call."""
        deadline = time.monotonic() + REPLAY_BUDGET_SECONDS
        for queued in self.spool.pending():
            if time.monotonic() > deadline:
                return
            if queued.ipamd != self.config.ipamd.address:
                continue
            try:
                self._replay_one(client, queued)
            except IpamdUnreachable:
                return
            except IpamdRefused as err:
                warn(f"dropping queued release of {queued.container_id}/{queued.ifname}: ipamd refused it ({err})")
                self.spool.remove(queued.container_id, queued.ifname)


def handlers(factory: Callable[[Request], Ipamc] = Ipamc.real) -> dict[str, Handler]:
    return {
        "ADD": lambda r: factory(r).add(r),
        "DEL": lambda r: factory(r).delete(r),
        "CHECK": lambda r: factory(r).check(r),
        "GC": lambda r: factory(r).gc(r),
        "STATUS": lambda r: factory(r).status(r),
    }
