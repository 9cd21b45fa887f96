"""`make demo-cluster`: the platform installs a highly available Kubernetes cluster on five
simulated machines of this one host, the way it would on real ones, and shows what it did.

The machines are network namespaces with their own sshd (machines.py, network.py); on them,
stand-ins of kubeadm, the kubelet, systemctl, apt-get, ... record what they are asked and
check it against kubeadm's rules (tests/support/standins.py), and `kubeadm init` brings up
the Kubernetes API stand-in behind the control-plane VIP (tests/support/standin_kube.py).
The platform is etcd, tke-apiserver and tke-controller as `make run` starts them
(platform.py). run.py is the flow; `python -m tests.support.demo` runs it.

environments.py is `make demo-environments` (`python -m tests.support.demo.environments`): one
platform, a baremetal, an aws (moto's EC2) and a hosted cluster side by side. Not shipped.
"""
