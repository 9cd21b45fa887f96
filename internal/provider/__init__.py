"""The provider framework: what a cluster or machine provider is (contract.py), how its named
steps run and record their progress in status.conditions (progress.py, runner.py), and the
shared pieces providers use (Kubernetes parameters in kube/, the SSH command channel,
credentials)."""
