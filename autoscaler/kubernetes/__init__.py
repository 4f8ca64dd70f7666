"""Kubernetes mode: Triton runs as the pods of a Deployment, and KEDA or an HPA scales them.

The daemon does not change Triton there. It reads every pod's series from
Prometheus (`pods.PodModelSource`: serving capacity = pods × instances per pod),
decides in instances with the same policy as everywhere else, and exports the
number of pods the demand needs, `triton_autoscaler_desired_replicas`
(`replicas.ReplicaExporter`), which KEDA's ScaledObject or an HPA with an
External metric reads (`manifests` writes both from the config). How fast the
pods follow is the HPA's `behavior`, not the daemon's step limits. See
docs/kubernetes.md.
"""
