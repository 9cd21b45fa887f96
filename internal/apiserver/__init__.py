"""tke-apiserver: the Cluster and Machine API over etcd."""
