"""The provider framework: what a cluster or machine provider is (contract.py), its named steps
(steps.py) and what their failures mean (errors.py), and the shared pieces providers use
(Kubernetes parameters in kube/, the SSH command channel, credentials, the files and commands of
nodes). tke-controller runs the steps and records their progress in status.conditions
(tke.internal.controller.runner and tke.internal.controller.progress)."""
