"""The manifests' copies of the stage spec's cluster facts (splatflow.spec.GPU), checked file by file.

The GPU node label and taint live in two manifests besides the spec: the eksctl ClusterConfig (the GPU node group's
labels, taints and autoscaler tags) and the NVIDIA device plugin's DaemonSet (its nodeSelector and tolerations).
:func:`gpu_manifest_problems` names each file that disagrees with the spec, so a change of the GPU label in the
spec reports exactly the manifests to edit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from splatflow.spec import GpuScheduling

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
EKS_CLUSTER = "eks/cluster.yaml"
DEVICE_PLUGIN = "gpu/nvidia-device-plugin.yaml"


def _gpu_group(cfg: dict[str, Any]) -> dict[str, Any]:
    groups = [g for g in cfg["managedNodeGroups"] if g.get("instanceType") == "g4dn.xlarge"]
    assert len(groups) == 1, "eks/cluster.yaml needs exactly one g4dn.xlarge managed node group"
    return groups[0]


def _tolerated(tolerations: list[dict[str, Any]], taint: dict[str, str]) -> bool:
    return any(t.get("key") == taint["key"] and t.get("effect") in (None, taint["effect"])
               and (t.get("operator") == "Exists" or t.get("value") == taint["value"]) for t in tolerations)


def gpu_manifest_problems(gpu: GpuScheduling, root: Path = MANIFESTS) -> list[str]:
    """One line per manifest file whose GPU label or taint differs from ``gpu``: ``manifests/<file>: ...``."""
    key, value = gpu.node_label
    taint = dict(zip(("key", "value", "effect"), gpu.taint, strict=True))
    problems = []
    group = _gpu_group(yaml.safe_load((root / EKS_CLUSTER).read_text()))
    tags = group.get("tags") or {}
    prefix = "k8s.io/cluster-autoscaler/node-template"
    if (group.get("labels") or {}).get(key) != value or group.get("taints") != [taint] \
            or tags.get(f"{prefix}/label/{key}") != value \
            or tags.get(f"{prefix}/taint/{taint['key']}") != f"{taint['value']}:{taint['effect']}":
        problems.append(f"manifests/{EKS_CLUSTER}: the GPU node group {group['name']!r} must carry the label "
                        f"{key}={value}, the taint {taint['key']}={taint['value']}:{taint['effect']} and the "
                        "cluster-autoscaler node-template tags for both")
    docs = [d for d in yaml.safe_load_all((root / DEVICE_PLUGIN).read_text()) if d and d.get("kind") == "DaemonSet"]
    pod = docs[0]["spec"]["template"]["spec"] if docs else {}
    if pod.get("nodeSelector") != {key: value} or not _tolerated(pod.get("tolerations") or [], taint):
        problems.append(f"manifests/{DEVICE_PLUGIN}: the device plugin must select {key}={value} and tolerate "
                        f"{taint['key']}:{taint['effect']}")
    return problems
