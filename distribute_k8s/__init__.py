"""Kubernetes parts shared by every model: the pods' entry point (launch.py) and a local TFJob runner
(local_run.py) that starts a manifest's replicas as local processes, so a job is tried before a cluster."""
