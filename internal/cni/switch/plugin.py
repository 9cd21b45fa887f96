"""cni-switch's verbs. `Switch` holds the seams (configuration, attachment store, plugin
executor, binding source) so tests can run every verb against fakes; `handlers()` builds the
real ones for the console script.

Error contract: ADD checks everything it needs (network choice, configuration, plugins and
their versions) and refuses an attachment that already has a record (code 104) before it
writes or delegates anything; then it either returns the delegate's result with a durable
record, or an error after undoing the delegated ADD (the record stays only when the undo
failed, so DEL and GC retry it). DEL succeeds when there is nothing left to delete. CHECK on
an attachment without a record is code 3. GC deletes recorded attachments the runtime no
longer lists, then forwards GC.

A delegate whose IPAM is tke-ipamc gets `static` instead, with the address cni-switch allocated
from tke-ipamd itself (tke.internal.cni.switch.inline: when, and what each verb does); an ADD
that fails after allocating releases what it allocated, and the record says whether the release
is still due, so a DEL after it releases once.
"""

from __future__ import annotations

import os
import time

from tke.internal.cni.args import format_args, ignore_unknown, parse_args, without
from tke.internal.cni.errors import (
    ATTACHMENT_EXISTS,
    INVALID_NETWORK_CONFIG,
    NOT_AVAILABLE,
    UNKNOWN_CONTAINER,
    CNIError,
)
from tke.internal.cni.invoke import RawExec
from tke.internal.cni.owner import WORKLOAD_KIND, WORKLOAD_NAME, PodOwner
from tke.internal.cni.skel import Request, valid_attachments, warn
from tke.internal.cni.switch.config import Network, SwitchConfig
from tke.internal.cni.switch.delegate import Delegate, Invocation, PluginVersions
from tke.internal.cni.switch.inline import (
    IPAMC,
    STATIC_DEL,
    Inline,
    checks_ipam,
    choose,
    ipamc_index,
    recorded,
    static_section,
)
from tke.internal.cni.switch.policy import Choice, choose_network
from tke.internal.cni.switch.state import (
    ADDING,
    DELEGATE_IPAM,
    RELEASED_IPAM,
    SWITCH_IPAM,
    Attachment,
    DiskStore,
)
from tke.internal.cni.version import result_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from tke.internal.cni.invoke import Exec
    from tke.internal.cni.skel import Handler
    from tke.internal.cni.switch.policy import BindingSource
    from tke.internal.cni.switch.state import AttachmentStore

# An attachment still "adding" this recently may be an ADD in flight: GC leaves it alone.
ADD_IN_FLIGHT_SECONDS = 300.0


class Switch:
    def __init__(
        self,
        config: SwitchConfig,
        store: AttachmentStore,
        runner: Exec,
        versions: PluginVersions,
        bindings: BindingSource | None,
    ) -> None:
        self.config = config
        self.store = store
        self.runner = runner
        self.versions = versions
        self.bindings = bindings

    @classmethod
    def real(cls, request: Request) -> Switch:
        config = SwitchConfig.from_json(request.config)
        folder = os.path.join(config.state_dir, config.name)
        runner = RawExec()
        bindings: BindingSource | None = None
        if config.ipamd is not None:
            bindings = _LazyIpamdBindings(config)
        return cls(
            config=config,
            store=DiskStore(os.path.join(folder, "attachments")),
            runner=runner,
            versions=PluginVersions(runner, os.path.join(config.state_dir, "plugin-versions.json")),
            bindings=bindings,
        )

    def _invocation(self, request: Request, args: str, **env: str) -> Invocation:
        environ = dict(request.environ)
        environ["CNI_ARGS"] = args
        environ.update(env)
        runtime_config = request.config.get("runtimeConfig") or {}
        return Invocation(
            cni_version=request.cni_version,
            path=request.path,
            environ=environ,
            runtime_config=runtime_config if isinstance(runtime_config, dict) else {},
            args=self.config.args,
        )

    def _delegate(self, network: Network, invocation: Invocation) -> Delegate:
        return Delegate(network, self.runner, self.versions, invocation)

    def _choose_inline(self, network: Network, invocation: Invocation, command: str) -> Inline | None:
        """Whether cni-switch runs the network's tke-ipamc itself for this verb (see inline)."""
        if ipamc_index(network) is None:
            return None  # the common case costs nothing more
        delegate = self._delegate(network, invocation)
        env = invocation.env(command)
        return choose(
            network,
            invocation,
            lambda plugin: delegate.plugin_version(plugin, env),
            self.runner,
            self.versions,
            ipamd=self.config.ipamd is not None,
        )

    def _recorded_inline(self, record: Attachment, network: Network, invocation: Invocation) -> Inline | None:
        """The Inline of an attachment whose record says cni-switch holds (or held) its address."""
        if record.ipam == DELEGATE_IPAM:
            return None
        delegate = self._delegate(network, invocation)
        env = invocation.env("DEL")
        return recorded(
            network, invocation, lambda plugin: delegate.plugin_version(plugin, env), self.runner, self.versions
        )

    def _static_delete(
        self, inline: Inline, invocation: Invocation, prev: dict[str, Any] | None, *, release: bool
    ) -> None:
        """The delegate's DEL with static in place of tke-ipamc and, when `release`, the address
        released right after the DEL of the plugin that holds the `ipam` section succeeded."""
        static = self._delegate(inline.with_ipam(STATIC_DEL), invocation)
        static.delete(prev, release=(inline.index, inline.release) if release else None)

    # ADD -------------------------------------------------------------------------------------

    def add(self, request: Request) -> dict[str, Any]:
        # Everything the ADD needs is decided and checked first (the network, its configuration,
        # every plugin and the version each one is spoken to in); only then is anything written
        # or delegated. A refused ADD leaves the node exactly as it was.
        pairs = request.arg_pairs()
        pod = PodOwner.from_args(pairs)
        choice = choose_network(
            networks=self.config.networks,
            default=self.config.default_network,
            network_arg=self.config.network_arg,
            pairs=pairs,
            pod=pod,
            bindings=self.bindings,
        )
        network = self.config.network(choice.network)
        args = self._delegate_args(request.args, pairs, choice)
        invocation = self._invocation(request, args)
        delegate = self._delegate(network, invocation)
        delegate.resolve()
        inline = self._choose_inline(network, invocation, "ADD")
        if inline is not None:
            inline.prepare()
        record = Attachment(
            container_id=request.container_id,
            ifname=request.ifname,
            network=network.to_json(),
            cni_version=request.cni_version,
            netns=request.netns,
            args=args,
            updated=time.time(),
            ipam=SWITCH_IPAM if inline is not None else DELEGATE_IPAM,
        )
        self._refuse_if_attached(request)
        self.store.put(record)
        delegated = inline is None
        try:
            if inline is not None:
                ipam = inline.allocate()
                delegate = self._delegate(inline.with_ipam(static_section(ipam)), invocation)
                delegated = True
            result = delegate.add()
        except Exception as err:  # whatever failed, the delegate may have done part of the work
            self._undo(request, delegate if delegated else None, record, err, inline)
            raise
        self.store.put(record.added(result))
        warn(f"{request.container_id}/{request.ifname} -> network {choice.network} ({choice.reason})")
        return result

    def _refuse_if_attached(self, request: Request) -> None:
        """ADD for an attachment that has a record (added, or an ADD that failed or crashed and
        was not DELeted since) is refused and touches nothing. The specification: a runtime
        should not call ADD twice without an intervening DEL, a plugin must return an error when
        the interface already exists, and the runtime must DEL after a failed ADD; that DEL
        (or GC) removes the record and what it holds."""
        previous = self.store.get(request.container_id, request.ifname)
        if previous is None:
            return
        raise CNIError(
            ATTACHMENT_EXISTS,
            f"{request.container_id}/{request.ifname} is already attached to network "
            f"{previous.network_key} ({previous.phase}); DEL it before adding it again",
            f"recorded in {self.config.name}'s state; nothing was changed",
        )

    def _delegate_args(self, raw: str, pairs: dict[str, str], choice: Choice) -> str:
        """CNI_ARGS for the delegate: without our own key (Debian's plugins reject unknown keys
        unless IgnoreUnknown=1), plus the workload a binding revealed, so tke-ipamc allocates
        for the right owner."""
        args = without(raw, [self.config.network_arg])
        binding = choice.binding
        if binding is None or not binding.workload_name:
            return args
        extra = {WORKLOAD_KIND: binding.workload_kind, WORKLOAD_NAME: binding.workload_name}
        if not ignore_unknown(pairs):
            extra = {"IgnoreUnknown": "1", **extra}
        kept = without(args, extra)
        return ";".join(p for p in (kept, format_args(extra)) if p)

    def _undo(
        self,
        request: Request,
        delegate: Delegate | None,
        record: Attachment,
        cause: Exception,
        inline: Inline | None = None,
    ) -> None:
        """The delegate's DEL (when it was run) and, when cni-switch allocated, the release (also
        after a failed Allocate, which ipamd may have done without answering, as tke-ipamc's DEL
        after bridge's failed ADD did). The record goes when all of it is done; else it stays,
        saying whether the release is still due, for the runtime's DEL or GC."""
        try:
            if inline is None:
                assert delegate is not None
                delegate.delete(None)
            elif delegate is None:
                inline.release()
            else:
                self._static_delete(inline, delegate.call, None, release=True)
        except CNIError as err:
            warn(f"undo of the failed ADD on network {record.network_key} failed too ({err}); keeping its record")
            if inline is not None and inline.released:
                self.store.put(record.replace(ipam=RELEASED_IPAM, updated=time.time()))
            return
        self.store.remove(request.container_id, request.ifname)
        warn(f"ADD on network {record.network_key} failed ({cause}); undone")

    # DEL -------------------------------------------------------------------------------------

    def delete(self, request: Request) -> None:
        record = self.store.get(request.container_id, request.ifname)
        prev = request.config.get("prevResult")
        if prev is not None and (problem := result_error(prev)):
            # DEL must finish: an unreadable prevResult is ignored (the record's result, if any, is used).
            warn(f"DEL of {request.container_id}/{request.ifname}: ignoring prevResult: {problem}")
            prev = None
        if record is not None:
            self._delete_recorded(request, record, prev)
            return
        self._delete_unrecorded(request, prev)

    def _delete_recorded(self, request: Request, record: Attachment, prev: dict[str, Any] | None) -> None:
        network = Network.from_json(record.network_key, record.network, "state record")
        self._delete_attachment(record, network, self._invocation(request, record.args), prev or record.result)
        self.store.remove(record.container_id, record.ifname)

    def _delete_attachment(
        self, record: Attachment, network: Network, invocation: Invocation, prev: dict[str, Any] | None
    ) -> None:
        """The recorded delegate's DEL; when cni-switch holds the address, with static and the
        release (unless the record says it is done), whose success is recorded if anything else
        fails, so the DEL that finishes does not release again."""
        inline = self._recorded_inline(record, network, invocation)
        if inline is None:
            self._delegate(network, invocation).delete(prev)
            return
        try:
            self._static_delete(inline, invocation, prev, release=record.ipam == SWITCH_IPAM)
        except CNIError:
            if inline.released:
                self.store.put(record.replace(ipam=RELEASED_IPAM, updated=time.time()))
            raise

    def _delete_unrecorded(self, request: Request, prev: dict[str, Any] | None) -> None:
        """No record (lost, or never written): every DEL is idempotent, so ask every network
        that could have this attachment: the explicit one if CNI_ARGS names it, else all,
        the default first. Networks whose configuration is unreadable are skipped."""
        pairs = parse_args(request.args)
        explicit = pairs.get(self.config.network_arg)
        if explicit in self.config.networks:
            keys = [explicit]
        else:
            keys = [self.config.default_network, *(k for k in self.config.networks if k != self.config.default_network)]
        args = without(request.args, [self.config.network_arg])
        first: CNIError | None = None
        for key in keys:
            try:
                network = self.config.network(key)
            except CNIError as err:
                warn(f"DEL without a record: skipping network {key}: {err}")
                continue
            try:
                invocation = self._invocation(request, args)
                inline = self._choose_inline(network, invocation, "DEL")
                if inline is None:
                    self._delegate(network, invocation).delete(prev)
                else:
                    self._static_delete(inline, invocation, prev, release=True)
            except CNIError as err:
                first = first or err
        if first is not None:
            raise first

    # CHECK -----------------------------------------------------------------------------------

    def check(self, request: Request) -> None:
        record = self.store.get(request.container_id, request.ifname)
        if record is None or record.phase == ADDING:
            raise CNIError(
                UNKNOWN_CONTAINER,
                f"cni-switch {self.config.name} has no attachment {request.container_id}/{request.ifname}",
            )
        prev = request.config.get("prevResult")
        if prev is not None and (problem := result_error(prev)):
            raise CNIError(INVALID_NETWORK_CONFIG, "prevResult is not a CNI result", problem)
        expected = prev if prev is not None else record.result
        if expected is None:
            raise CNIError(INVALID_NETWORK_CONFIG, "CHECK needs prevResult")
        network = Network.from_json(record.network_key, record.network, "state record")
        invocation = self._invocation(request, record.args)
        inline = None if network.disable_check else self._recorded_inline(record, network, invocation)
        if inline is None:
            self._delegate(network, invocation).check(expected)
            return
        # As the plugin's CHECK ran tke-ipamc's: ipamd first, then the plugin's own checks.
        if checks_ipam(self._delegate(network, invocation).plugin_version(inline.plugin, invocation.env("CHECK"))):
            inline.check(expected)
        self._delegate(inline.with_ipam(static_section(expected)), invocation).check(expected)

    # GC --------------------------------------------------------------------------------------

    def gc(self, request: Request) -> None:
        valid = valid_attachments(request.config)
        keep = {(a["containerID"], a["ifname"]) for a in valid}
        first: CNIError | None = None
        now = time.time()
        for record in self.store.list():
            if (record.container_id, record.ifname) in keep:
                continue
            if record.phase == ADDING and now - record.updated < ADD_IN_FLIGHT_SECONDS:
                continue
            # The namespace is gone or not ours any more: never touch a namespace by a path
            # that may have been reused; the delegates release without it.
            overrides = {"CNI_CONTAINERID": record.container_id, "CNI_IFNAME": record.ifname, "CNI_NETNS": ""}
            try:
                network = Network.from_json(record.network_key, record.network, "state record")
                invocation = self._invocation(request, record.args, **overrides)
                self._delete_attachment(record, network, invocation, record.result)
                self.store.remove(record.container_id, record.ifname)
                warn(f"GC: deleted stale attachment {record.container_id}/{record.ifname}")
            except CNIError as err:
                first = first or err
        collected: set[str] = set()
        for key in self.config.networks:
            try:
                network = self.config.network(key)
            except CNIError as err:
                first = first or err
                continue
            invocation = self._invocation(request, "")
            skip = ""
            index = ipamc_index(network)
            if index is not None and self.config.ipamd is not None and not network.disable_gc:
                # tke-ipamc's GC (its queue replayed, then ipamd's GarbageCollect of the node)
                # from here, as for the network's ADD and DEL: no process of its own.
                skip = IPAMC
                try:
                    Inline(network, index, invocation).gc(valid, collected)
                except CNIError as err:
                    warn(f"GC of {IPAMC} in network {network.key} failed: {err}")
                    first = first or err
            try:
                self._delegate(network, invocation).gc(valid, collected, skip_ipam=skip)
            except CNIError as err:
                first = first or err
        if isinstance(self.store, DiskStore):
            self.store.sweep_temporary(ADD_IN_FLIGHT_SECONDS)
        if first is not None:
            raise first

    # STATUS ----------------------------------------------------------------------------------

    def status(self, request: Request) -> None:
        try:
            network = self.config.network(self.config.default_network)
        except CNIError as err:
            raise CNIError(NOT_AVAILABLE, f"default network {self.config.default_network} unusable", str(err)) from None
        if isinstance(self.store, DiskStore):
            try:
                os.makedirs(self.store.folder, mode=0o700, exist_ok=True)
            except OSError as err:
                raise CNIError(NOT_AVAILABLE, f"state directory {self.store.folder} unusable", str(err)) from None
            if not os.access(self.store.folder, os.W_OK):
                raise CNIError(NOT_AVAILABLE, f"state directory {self.store.folder} is not writable")
        invocation = self._invocation(request, "")
        skip = ""
        index = ipamc_index(network)
        if index is not None and self.config.ipamd is not None:
            # tke-ipamc's STATUS from here, as for the network's ADD, DEL and GC.
            Inline(network, index, invocation).status()
            skip = IPAMC
        self._delegate(network, invocation).status(skip_ipam=skip)


class _LazyIpamdBindings:
    """Imports the ipamd client on the first lookup only: DEL, CHECK, GC and the ADDs that
    need no binding never load it."""

    def __init__(self, config: SwitchConfig) -> None:
        self.config = config

    def lookup(self, pod: PodOwner) -> Any:
        from tke.internal.cni.switch.bindings import IpamdBindings

        assert self.config.ipamd is not None
        return IpamdBindings(self.config.ipamd).lookup(pod)


def handlers(factory: Callable[[Request], Switch] = Switch.real) -> dict[str, Handler]:
    return {
        "ADD": lambda r: factory(r).add(r),
        "DEL": lambda r: factory(r).delete(r),
        "CHECK": lambda r: factory(r).check(r),
        "GC": lambda r: factory(r).gc(r),
        "STATUS": lambda r: factory(r).status(r),
    }
