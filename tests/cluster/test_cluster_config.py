"""cluster/*.yaml pass Ray's own cluster-config preparation and schema validation, offline.

``ray up`` runs prepare_config -> (provider fills node resources, e.g. boto3 for AWS) ->
validate_config -> provider bootstrap (cloud calls). The first and the schema check need no
cloud credentials; that is what this test (and `cluster/README.md`) relies on.
"""

from __future__ import annotations

import copy

import pytest

from tests import REPO

yaml = pytest.importorskip("yaml")
pytest.importorskip("jsonschema")
util = pytest.importorskip("ray.autoscaler._private.util")

CLUSTER = REPO / "cluster"


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def prepared(name: str) -> dict:
    cfg = util.prepare_config(copy.deepcopy(load(name)))
    util.validate_config(cfg)
    return cfg


def test_gpu_yaml_validates_and_has_the_intended_shape():
    cfg = prepared("gpu.yaml")
    assert cfg["provider"]["type"] == "aws"
    assert cfg["docker"]["image"] == "rayproject/ray:2.60.0-py311-gpu"
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # trials never land on the head
    gpu = [t for n, t in types.items() if n != cfg["head_node_type"]]
    assert len(gpu) == 1 and gpu[0]["resources"]["GPU"] >= 1
    assert 0 <= gpu[0]["min_workers"] <= gpu[0]["max_workers"] <= cfg["max_workers"]
    # the package reaches the nodes by file_mounts + pip install (ray submit copies one file)
    mount = [r for r, local in cfg["file_mounts"].items() if local == "."]
    assert mount and any("pip install" in c and mount[0] in c for c in cfg["setup_commands"])
    head_cmds = " ".join(cfg["head_start_ray_commands"])
    assert "--head" in head_cmds and "RAY_AUTH_MODE=token" in head_cmds
    assert "dashboard-host" not in head_cmds  # dashboard stays on 127.0.0.1
    assert "RAY_AUTH_MODE=token" in " ".join(cfg["worker_start_ray_commands"])


def test_local_yaml_validates():
    cfg = prepared("local.yaml")
    assert cfg["provider"]["type"] == "local"
    assert cfg["provider"]["head_ip"] and len(cfg["provider"]["worker_ips"]) >= 1
    (node,) = cfg["available_node_types"].values()
    assert node["max_workers"] == len(cfg["provider"]["worker_ips"])
    assert "dashboard-host" not in " ".join(cfg["head_start_ray_commands"])


def test_validation_really_rejects_a_broken_config():
    import jsonschema

    bad = load("gpu.yaml")
    bad["available_node_types"]["gpu_worker"]["min_wrokers"] = 1  # typo in a field name
    with pytest.raises(jsonschema.ValidationError):
        util.validate_config(util.prepare_config(bad))
    bad = load("gpu.yaml")
    bad["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError):
        util.validate_config(util.prepare_config(bad))


def test_grafana_dashboard_charts_the_gauges_the_search_exports():
    import json
    import re

    dash = json.loads((CLUSTER / "grafana" / "autoloss_dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"ray_autoloss_\w+", e)}
    # the gauges trainables/progress.py defines (Ray prefixes them with "ray_")
    source = (CLUSTER.parent / "trainables" / "progress.py").read_text()
    defined = {"ray_" + m for m in re.findall(r'Gauge\(\s*"(autoloss_\w+)"', source)}
    assert defined == {"ray_autoloss_step", "ray_autoloss_trials_done",
                       "ray_autoloss_best_reward", "ray_autoloss_mean_reward"}
    assert used == defined
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
