"""Cluster mode (--cluster-etcd): many servers behind a consistent-hash proxy, one owner per
model held by an etcd lease, checkpoints in one shared directory (docs/cluster.md).

- membership.py: the lease, claims and fenced checkpoint commits in etcd (`Membership`;
  imported only in cluster mode, as it needs the etcd client).
- shared_store.py: checkpoint files in the shared directory, committed through etcd.
- routing.py: where a call runs (`ClusterNode.locate`) and the forwarding interceptor.
"""
