"""tke-controller: informers, work queues and the cluster and machine controllers."""
