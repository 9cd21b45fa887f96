"""The field lists of the configuration documents the platform writes, from Kubernetes'
reference documentation, to check documents against: no unknown field, no missing required
one, the right types.

Sources (each reference page is generated from the Go types named below; fields are listed
with their JSON names, "[Required]" where the reference says so):
- kubeadm Configuration (v1beta4), https://kubernetes.io/docs/reference/config-api/kubeadm-config.v1beta4/
  (Kubernetes 1.31 and later; k8s.io/kubernetes cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go)
- kubeadm Configuration (v1beta3), https://kubernetes.io/docs/reference/config-api/kubeadm-config.v1beta3/
  (Kubernetes 1.22 to 1.30; .../kubeadm/v1beta3/types.go), with BootstrapToken from
  bootstraptoken/v1 (both versions)
- Kubelet Configuration (v1beta1), https://kubernetes.io/docs/reference/config-api/kubelet-config.v1beta1/
- kube-proxy Configuration (v1alpha1), https://kubernetes.io/docs/reference/config-api/kube-proxy-config.v1alpha1/
- kube-scheduler Configuration (v1), https://kubernetes.io/docs/reference/config-api/kube-scheduler-config.v1/
  (KubeSchedulerConfiguration, Extender and the component-base ClientConnectionConfiguration and
  LeaderElectionConfiguration), written for the network add-on's scheduler extender

The kube-proxy page marks every field [Required] because its Go type has no `+optional`
markers, yet kube-proxy defaults every field it is not given (and kubeadm itself writes a
partial KubeProxyConfiguration): for that kind "required" is recorded but not enforced
(DEFAULTED_KINDS). The KubeletConfiguration list holds the fields of the 1.29-1.32 pages.

Used by the tests and by the stand-in kubeadm (tests/support/standins.py), which refuses a
configuration file the real kubeadm would refuse for the same reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# A type is a primitive name, "[]T" (list), "map[K]V", or the name of a struct below.
Field = tuple[str, bool]  # (type, required)
Struct = dict[str, Field]

_DURATION = re.compile(r"^(-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+|0)$")
_TOKEN = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")

_COMMON: dict[str, Struct] = {
    "BootstrapToken": {
        "token": ("bootstrapToken", True),
        "description": ("string", False),
        "ttl": ("duration", False),
        "expires": ("time", False),
        "usages": ("[]string", False),
        "groups": ("[]string", False),
    },
    "APIEndpoint": {"advertiseAddress": ("string", False), "bindPort": ("int", False)},
    "Networking": {"serviceSubnet": ("string", False), "podSubnet": ("string", False), "dnsDomain": ("string", False)},
    "Etcd": {"local": ("LocalEtcd", False), "external": ("ExternalEtcd", False)},
    "ExternalEtcd": {
        "endpoints": ("[]string", True),
        "caFile": ("string", True),
        "certFile": ("string", True),
        "keyFile": ("string", True),
    },
    "HostPathMount": {
        "name": ("string", True),
        "hostPath": ("string", True),
        "mountPath": ("string", True),
        "readOnly": ("bool", False),
        "pathType": ("string", False),
    },
    "Patches": {"directory": ("string", False)},
    "Taint": {
        "key": ("string", True),
        "value": ("string", False),
        "effect": ("string", True),
        "timeAdded": ("time", False),
    },
    "JoinControlPlane": {"localAPIEndpoint": ("APIEndpoint", False), "certificateKey": ("string", False)},
    "BootstrapTokenDiscovery": {
        "token": ("bootstrapToken", True),
        "apiServerEndpoint": ("string", False),
        "caCertHashes": ("[]string", False),
        "unsafeSkipCAVerification": ("bool", False),
    },
    "FileDiscovery": {"kubeConfigPath": ("string", True)},
    "ImageMeta": {"imageRepository": ("string", False), "imageTag": ("string", False)},
}

V1BETA3: dict[str, Struct] = {
    **_COMMON,
    "InitConfiguration": {
        "bootstrapTokens": ("[]BootstrapToken", False),
        "nodeRegistration": ("NodeRegistrationOptions", False),
        "localAPIEndpoint": ("APIEndpoint", False),
        "certificateKey": ("string", False),
        "skipPhases": ("[]string", False),
        "patches": ("Patches", False),
    },
    "ClusterConfiguration": {
        "etcd": ("Etcd", False),
        "networking": ("Networking", False),
        "kubernetesVersion": ("string", False),
        "controlPlaneEndpoint": ("string", False),
        "apiServer": ("APIServer", False),
        "controllerManager": ("ControlPlaneComponent", False),
        "scheduler": ("ControlPlaneComponent", False),
        "dns": ("DNS", False),
        "certificatesDir": ("string", False),
        "imageRepository": ("string", False),
        "featureGates": ("map[string]bool", False),
        "clusterName": ("string", False),
    },
    "ControlPlaneComponent": {"extraArgs": ("map[string]string", False), "extraVolumes": ("[]HostPathMount", False)},
    "APIServer": {
        "extraArgs": ("map[string]string", False),
        "extraVolumes": ("[]HostPathMount", False),
        "certSANs": ("[]string", False),
        "timeoutForControlPlane": ("duration", False),
    },
    "DNS": {"imageRepository": ("string", False), "imageTag": ("string", False)},
    "NodeRegistrationOptions": {
        "name": ("string", False),
        "criSocket": ("string", False),
        "taints": ("[]Taint", True),
        "kubeletExtraArgs": ("map[string]string", False),
        "ignorePreflightErrors": ("[]string", False),
        "imagePullPolicy": ("string", False),
    },
    "LocalEtcd": {
        "imageRepository": ("string", False),
        "imageTag": ("string", False),
        "dataDir": ("string", True),
        "extraArgs": ("map[string]string", False),
        "serverCertSANs": ("[]string", False),
        "peerCertSANs": ("[]string", False),
    },
    "JoinConfiguration": {
        "nodeRegistration": ("NodeRegistrationOptions", False),
        "caCertPath": ("string", False),
        "discovery": ("Discovery", True),
        "controlPlane": ("JoinControlPlane", False),
        "skipPhases": ("[]string", False),
        "patches": ("Patches", False),
    },
    "Discovery": {
        "bootstrapToken": ("BootstrapTokenDiscovery", False),
        "file": ("FileDiscovery", False),
        "tlsBootstrapToken": ("string", False),
        "timeout": ("duration", False),
    },
}

_TIMEOUTS: Struct = {
    "controlPlaneComponentHealthCheck": ("duration", False),
    "kubeletHealthCheck": ("duration", False),
    "kubernetesAPICall": ("duration", False),
    "etcdAPICall": ("duration", False),
    "tlsBootstrap": ("duration", False),
    "discovery": ("duration", False),
    "upgradeManifests": ("duration", True),
}

V1BETA4: dict[str, Struct] = {
    **_COMMON,
    "Arg": {"name": ("string", True), "value": ("string", True)},
    "EnvVar": {"name": ("string", True), "value": ("string", False), "valueFrom": ("object", False)},
    "Timeouts": _TIMEOUTS,
    "InitConfiguration": {
        **V1BETA3["InitConfiguration"],
        "dryRun": ("bool", False),
        "timeouts": ("Timeouts", False),
    },
    "ClusterConfiguration": {
        **V1BETA3["ClusterConfiguration"],
        "proxy": ("Proxy", True),
        "encryptionAlgorithm": ("string", False),
        "certificateValidityPeriod": ("duration", False),
        "caCertificateValidityPeriod": ("duration", False),
    },
    "ControlPlaneComponent": {
        "extraArgs": ("[]Arg", False),
        "extraVolumes": ("[]HostPathMount", False),
        "extraEnvs": ("[]EnvVar", False),
    },
    "APIServer": {
        "extraArgs": ("[]Arg", False),
        "extraVolumes": ("[]HostPathMount", False),
        "extraEnvs": ("[]EnvVar", False),
        "certSANs": ("[]string", False),
    },
    "DNS": {"imageRepository": ("string", False), "imageTag": ("string", False), "disabled": ("bool", False)},
    "Proxy": {"disabled": ("bool", False)},
    "NodeRegistrationOptions": {
        **V1BETA3["NodeRegistrationOptions"],
        "kubeletExtraArgs": ("[]Arg", False),
        "imagePullSerial": ("bool", False),
    },
    "LocalEtcd": {**V1BETA3["LocalEtcd"], "extraArgs": ("[]Arg", False), "extraEnvs": ("[]EnvVar", False)},
    "JoinConfiguration": {
        **V1BETA3["JoinConfiguration"],
        "dryRun": ("bool", False),
        "timeouts": ("Timeouts", False),
    },
    "Discovery": {
        "bootstrapToken": ("BootstrapTokenDiscovery", False),
        "file": ("FileDiscovery", False),
        "tlsBootstrapToken": ("string", False),
    },
}

KUBELET: dict[str, Struct] = {
    "KubeletConfiguration": {
        name: (kind, name == "containerRuntimeEndpoint")
        for name, kind in {
            "enableServer": "bool",
            "staticPodPath": "string",
            "podLogsDir": "string",
            "syncFrequency": "duration",
            "fileCheckFrequency": "duration",
            "httpCheckFrequency": "duration",
            "staticPodURL": "string",
            "staticPodURLHeader": "map[string][]string",
            "address": "string",
            "port": "int",
            "readOnlyPort": "int",
            "tlsCertFile": "string",
            "tlsPrivateKeyFile": "string",
            "tlsCipherSuites": "[]string",
            "tlsMinVersion": "string",
            "rotateCertificates": "bool",
            "serverTLSBootstrap": "bool",
            "authentication": "KubeletAuthentication",
            "authorization": "KubeletAuthorization",
            "registryPullQPS": "int",
            "registryBurst": "int",
            "eventRecordQPS": "int",
            "eventBurst": "int",
            "enableDebuggingHandlers": "bool",
            "enableContentionProfiling": "bool",
            "healthzPort": "int",
            "healthzBindAddress": "string",
            "oomScoreAdj": "int",
            "clusterDomain": "string",
            "clusterDNS": "[]string",
            "streamingConnectionIdleTimeout": "duration",
            "nodeStatusUpdateFrequency": "duration",
            "nodeStatusReportFrequency": "duration",
            "nodeLeaseDurationSeconds": "int",
            "imageMinimumGCAge": "duration",
            "imageMaximumGCAge": "duration",
            "imageGCHighThresholdPercent": "int",
            "imageGCLowThresholdPercent": "int",
            "volumeStatsAggPeriod": "duration",
            "kubeletCgroups": "string",
            "systemCgroups": "string",
            "cgroupRoot": "string",
            "cgroupsPerQOS": "bool",
            "cgroupDriver": "string",
            "cpuManagerPolicy": "string",
            "singleProcessOOMKill": "bool",
            "cpuManagerPolicyOptions": "map[string]string",
            "cpuManagerReconcilePeriod": "duration",
            "memoryManagerPolicy": "string",
            "topologyManagerPolicy": "string",
            "topologyManagerScope": "string",
            "topologyManagerPolicyOptions": "map[string]string",
            "qosReserved": "map[string]string",
            "runtimeRequestTimeout": "duration",
            "hairpinMode": "string",
            "maxPods": "int",
            "podCIDR": "string",
            "podPidsLimit": "int",
            "resolvConf": "string",
            "runOnce": "bool",
            "cpuCFSQuota": "bool",
            "cpuCFSQuotaPeriod": "duration",
            "nodeStatusMaxImages": "int",
            "maxOpenFiles": "int",
            "contentType": "string",
            "kubeAPIQPS": "int",
            "kubeAPIBurst": "int",
            "serializeImagePulls": "bool",
            "maxParallelImagePulls": "int",
            "evictionHard": "map[string]string",
            "evictionSoft": "map[string]string",
            "evictionSoftGracePeriod": "map[string]string",
            "evictionPressureTransitionPeriod": "duration",
            "evictionMaxPodGracePeriod": "int",
            "evictionMinimumReclaim": "map[string]string",
            "podsPerCore": "int",
            "enableControllerAttachDetach": "bool",
            "protectKernelDefaults": "bool",
            "makeIPTablesUtilChains": "bool",
            "iptablesMasqueradeBit": "int",
            "iptablesDropBit": "int",
            "featureGates": "map[string]bool",
            "failSwapOn": "bool",
            "memorySwap": "object",
            "containerLogMaxSize": "string",
            "containerLogMaxFiles": "int",
            "containerLogMaxWorkers": "int",
            "containerLogMonitorInterval": "duration",
            "configMapAndSecretChangeDetectionStrategy": "string",
            "systemReserved": "map[string]string",
            "kubeReserved": "map[string]string",
            "reservedSystemCPUs": "string",
            "showHiddenMetricsForVersion": "string",
            "systemReservedCgroup": "string",
            "kubeReservedCgroup": "string",
            "enforceNodeAllocatable": "[]string",
            "allowedUnsafeSysctls": "[]string",
            "volumePluginDir": "string",
            "providerID": "string",
            "kernelMemcgNotification": "bool",
            "logging": "object",
            "enableSystemLogHandler": "bool",
            "enableSystemLogQuery": "bool",
            "shutdownGracePeriod": "duration",
            "shutdownGracePeriodCriticalPods": "duration",
            "shutdownGracePeriodByPodPriority": "[]object",
            "crashLoopBackOff": "object",
            "reservedMemory": "[]object",
            "enableProfilingHandler": "bool",
            "enableDebugFlagsHandler": "bool",
            "seccompDefault": "bool",
            "memoryThrottlingFactor": "number",
            "registerWithTaints": "[]Taint",
            "registerNode": "bool",
            "tracing": "object",
            "localStorageCapacityIsolation": "bool",
            "containerRuntimeEndpoint": "string",
            "imageServiceEndpoint": "string",
            "failCgroupV1": "bool",
            "userNamespaces": "object",
        }.items()
    },
    "KubeletAuthentication": {
        "x509": ("KubeletX509Authentication", False),
        "webhook": ("KubeletWebhookAuthentication", False),
        "anonymous": ("KubeletAnonymousAuthentication", False),
    },
    "KubeletX509Authentication": {"clientCAFile": ("string", False)},
    "KubeletWebhookAuthentication": {"enabled": ("bool", False), "cacheTTL": ("duration", False)},
    "KubeletAnonymousAuthentication": {"enabled": ("bool", False)},
    "KubeletAuthorization": {"mode": ("string", False), "webhook": ("KubeletWebhookAuthorization", False)},
    "KubeletWebhookAuthorization": {
        "cacheAuthorizedTTL": ("duration", False),
        "cacheUnauthorizedTTL": ("duration", False),
    },
    "Taint": _COMMON["Taint"],
}

KUBE_PROXY: dict[str, Struct] = {
    "KubeProxyConfiguration": {
        name: (kind, True)
        for name, kind in {
            "featureGates": "map[string]bool",
            "clientConnection": "object",
            "logging": "object",
            "hostnameOverride": "string",
            "bindAddress": "string",
            "healthzBindAddress": "string",
            "metricsBindAddress": "string",
            "bindAddressHardFail": "bool",
            "enableProfiling": "bool",
            "showHiddenMetricsForVersion": "string",
            "mode": "string",
            "iptables": "object",
            "ipvs": "object",
            "nftables": "object",
            "winkernel": "object",
            "detectLocalMode": "string",
            "detectLocal": "object",
            "clusterCIDR": "string",
            "nodePortAddresses": "[]string",
            "oomScoreAdj": "int",
            "conntrack": "object",
            "configSyncPeriod": "duration",
            "portRange": "string",
            "windowsRunAsService": "bool",
        }.items()
    },
}

KUBE_SCHEDULER: dict[str, Struct] = {
    "KubeSchedulerConfiguration": {
        "parallelism": ("int", True),
        "leaderElection": ("LeaderElectionConfiguration", True),
        "clientConnection": ("ClientConnectionConfiguration", True),
        "healthzBindAddress": ("string", False),
        "metricsBindAddress": ("string", False),
        "enableProfiling": ("bool", False),
        "enableContentionProfiling": ("bool", False),
        "percentageOfNodesToScore": ("int", False),
        "podInitialBackoffSeconds": ("int", True),
        "podMaxBackoffSeconds": ("int", True),
        "profiles": ("[]object", True),
        "extenders": ("[]Extender", True),
        "delayCacheUntilActive": ("bool", True),
    },
    "Extender": {
        "urlPrefix": ("string", True),
        "filterVerb": ("string", True),
        "preemptVerb": ("string", True),
        "prioritizeVerb": ("string", True),
        "weight": ("int", True),
        "bindVerb": ("string", True),
        "enableHTTPS": ("bool", True),
        "tlsConfig": ("object", True),
        "httpTimeout": ("duration", True),
        "nodeCacheCapable": ("bool", True),
        "managedResources": ("[]object", False),
        "ignorable": ("bool", True),
    },
    "LeaderElectionConfiguration": {
        "leaderElect": ("bool", True),
        "leaseDuration": ("duration", True),
        "renewDeadline": ("duration", True),
        "retryPeriod": ("duration", True),
        "resourceLock": ("string", True),
        "resourceName": ("string", True),
        "resourceNamespace": ("string", True),
    },
    "ClientConnectionConfiguration": {
        "kubeconfig": ("string", True),
        "acceptContentTypes": ("string", True),
        "contentType": ("string", True),
        "qps": ("number", True),
        "burst": ("int", True),
    },
}

# apiVersion -> (its structs, the kinds a document of it may be)
APIS: dict[str, tuple[dict[str, Struct], tuple[str, ...]]] = {
    "kubeadm.k8s.io/v1beta3": (V1BETA3, ("InitConfiguration", "ClusterConfiguration", "JoinConfiguration")),
    "kubeadm.k8s.io/v1beta4": (V1BETA4, ("InitConfiguration", "ClusterConfiguration", "JoinConfiguration")),
    "kubelet.config.k8s.io/v1beta1": (KUBELET, ("KubeletConfiguration",)),
    "kubeproxy.config.k8s.io/v1alpha1": (KUBE_PROXY, ("KubeProxyConfiguration",)),
    "kubescheduler.config.k8s.io/v1": (KUBE_SCHEDULER, ("KubeSchedulerConfiguration",)),
}
# Kinds whose reference marks fields [Required] that the component defaults (their Go types lack
# `+optional`): what they must not have is checked, what they lack is not.
DEFAULTED_KINDS = frozenset(
    {
        "KubeProxyConfiguration",
        "KubeSchedulerConfiguration",
        "Extender",
        "LeaderElectionConfiguration",
        "ClientConnectionConfiguration",
    }
)


def _type_error(value: Any, kind: str, structs: Mapping[str, Struct], path: str, out: list[str]) -> None:
    if kind.startswith("[]"):
        if not isinstance(value, list):
            out.append(f"{path}: want a list of {kind[2:]}, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _type_error(item, kind[2:], structs, f"{path}[{i}]", out)
        return
    if kind.startswith("map["):
        if not isinstance(value, dict):
            out.append(f"{path}: want a map, got {type(value).__name__}")
            return
        inner = kind[kind.index("]") + 1 :]
        for k, v in value.items():
            if not isinstance(k, str):
                out.append(f"{path}: map keys must be strings")
            _type_error(v, inner, structs, f"{path}[{k}]", out)
        return
    checks = {
        "string": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "duration": lambda v: isinstance(v, str) and bool(_DURATION.match(v)),
        "time": lambda v: isinstance(v, str),
        "object": lambda v: isinstance(v, dict),
        "bootstrapToken": lambda v: isinstance(v, str) and bool(_TOKEN.match(v)),
    }
    if kind in checks:
        if not checks[kind](value):
            out.append(f"{path}: {value!r} is not a {kind}")
        return
    if not isinstance(value, dict):
        out.append(f"{path}: want a {kind} object, got {type(value).__name__}")
        return
    _struct_errors(value, kind, structs, path, out, enforce_required=kind not in DEFAULTED_KINDS)


def _struct_errors(
    doc: Mapping[str, Any],
    kind: str,
    structs: Mapping[str, Struct],
    path: str,
    out: list[str],
    *,
    enforce_required: bool,
) -> None:
    fields = structs[kind]
    for name, value in doc.items():
        if path == "" and name in ("apiVersion", "kind"):
            continue
        where = f"{path}.{name}" if path else name
        if name not in fields:
            out.append(f"{where}: unknown field of {kind}")
            continue
        _type_error(value, fields[name][0], structs, where, out)
    if enforce_required:
        for name, (_, required) in fields.items():
            if required and name not in doc:
                out.append(f"{path + '.' if path else ''}{name}: required field of {kind} is missing")


def errors(doc: Mapping[str, Any]) -> list[str]:
    """What is wrong with one document (empty: it matches the reference)."""
    api, kind = doc.get("apiVersion"), doc.get("kind")
    if api not in APIS:
        return [f"apiVersion: {api!r} is not one of {sorted(APIS)}"]
    structs, kinds = APIS[api]
    if kind not in kinds:
        return [f"kind: {kind!r} is not a kind of {api} ({', '.join(kinds)})"]
    out: list[str] = []
    _struct_errors(doc, kind, structs, "", out, enforce_required=kind not in DEFAULTED_KINDS)
    return out
