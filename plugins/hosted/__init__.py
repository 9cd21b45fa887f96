"""What the hosted cluster provider is made of (TKE's managed mode: a cluster's control plane
runs as Kubernetes objects in a meta cluster the platform is configured with):

- options.py: the provider's options (the meta cluster's kubeconfig, the endpoint Service's
  type, replicas, images, the networks the control planes must not reach) and the component
  images of a Kubernetes version;
- meta.py: the meta cluster's API, where the endpoint Service is reached, and whether the
  workloads are ready (from their controllers' status);
- plan.py: what one control plane is rendered from (cluster, options, namespace, endpoint);
- naming.py: the namespace of a cluster in the meta cluster, and the labels of everything the
  platform puts there;
- certificates.py: the leaf certificates and kubeconfigs of the components, issued from the
  cluster's CAs (its ClusterCredential), as Secrets; kept while still valid;
- control_plane.py: the meta cluster's objects: the namespace, the endpoint Service, etcd (a
  StatefulSet), kube-apiserver, kube-controller-manager and kube-scheduler (Deployments);
- network_policy.py: the NetworkPolicies of the namespace: its pods reach and are reached by
  nothing but what the control plane needs (not another tenant's control plane, not the meta
  cluster's own services);
- cluster_objects.py: the objects kubeadm init would have made in the cluster's own API (no
  kubeadm init runs there): what `kubeadm join` reads, and the kube-proxy add-on.

The provider itself (its steps) is plugins/cluster_providers/hosted.py.

Everything is a plain dict manifest, applied with server-side apply through the platform's
Kubernetes access layer (tke.internal.provider.kube), so applying it again changes nothing.
"""
