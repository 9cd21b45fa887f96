"""The policy centre's kept decisions: bounded whatever names callers send."""

from __future__ import annotations

from types import SimpleNamespace

from tests.support.memory_store import MemoryStore
from tke.internal.auth.authz import Attributes, Decision
from tke.internal.auth.identity import Identity
from tke.plugins.authz.policy import DECISIONS_KEPT, PolicyCentre


async def test_decisions_kept_are_bounded_and_stay_right() -> None:
    centre = PolicyCentre(SimpleNamespace(prefix="/t", store=MemoryStore(), authority=None))
    caller = Identity(user="mallory", tenant_id="team-m")
    for n in range(DECISIONS_KEPT + 50):
        decision, reason = await centre.authorize(Attributes(caller, "get", "clusters", f"c{n}", "team-m"))
        assert decision is Decision.NO_OPINION and "no role binding" in reason
        assert centre._kept <= DECISIONS_KEPT
    admin = Identity(user="root", groups=("tke:platform-admins",))
    assert (await centre.authorize(Attributes(admin, "delete", "clusters", "c1", "team-m")))[0] is Decision.ALLOW
