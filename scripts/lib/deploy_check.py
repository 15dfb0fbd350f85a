"""The checks of scripts/deploy-check that need to read YAML: run by that script
with the Python of its virtualenv (PyYAML comes with checkov and
kubernetes-validate), never on its own.

  rules ALERTS RULE [--write]
      Compares the rule groups of the PrometheusRule RULE with those of the
      Prometheus rule file ALERTS (parsed, so formatting and comments do not
      count) and fails with a diff when they differ; --write rewrites RULE from
      ALERTS instead.
  rendered RENDERED OUT_DIR
      For the output of `kubectl kustomize` RENDERED: writes the objects of the
      Prometheus Operator's group (monitoring.coreos.com) to
      OUT_DIR/prometheus-operator.json, for scripts/lib/deploy-check-crds.mjs
      (which validates them with npm's @kubernetes-models/prometheus-operator),
      the other objects to OUT_DIR/builtin.yaml, for kubernetes-validate, and the
      PrometheusRule's groups to OUT_DIR/rules.yml, for promtool; checks the stop
      sequence (the preStop sleep equals SHUTDOWN_DRAIN_SECONDS, and the grace
      period outlasts preStop + drain + grace + the pools' 5 s) and that the image
      reference was set by the overlay. Prints one line per finding; exits 1 if
      any.
  pod RENDERED KIND NAME
      Prints, in JSON, how the kubelet would start the first container of that
      object: args, environment (ConfigMaps and literal values), the Secret keys
      it references, the preStop sleep and the grace period.
"""

import difflib
import json
import sys
from pathlib import Path

import yaml

# The server closes its database pools after the grace period: 5 s at most
# (docs/operations.md, "Signals and stopping").
POOL_CLOSE_SECONDS = 5

RULE_HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by `scripts/deploy-check --write-rules`:
# edit that file (and its promtool tests), then regenerate. scripts/deploy-check fails
# when the two differ. What each alert means: the comments there, and
# docs/operations/metrics.md.
#
# The Prometheus Operator loads these rules when its ruleSelector matches this
# object's labels (kube-prometheus-stack: the label `release` of its Helm release; an
# overlay adds it). ConduitNotReady needs a blackbox probe of GET /health/ready in a
# job named `conduit-ready` (not part of these manifests): without one it never fires.
"""


class Block(str):
    """A string written as a YAML literal block (`|`)."""


def _block(dumper, data):
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")


yaml.SafeDumper.add_representer(Block, _block)


def _blocks(value):
    """Multi-line strings as literal blocks, so that the expressions stay readable."""
    if isinstance(value, dict):
        return {k: _blocks(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_blocks(v) for v in value]
    if isinstance(value, str) and "\n" in value:
        return Block(value)
    return value


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def dump(value):
    return yaml.safe_dump(_blocks(value), sort_keys=False, width=100, default_flow_style=False)


def rules(alerts_path, rule_path, write):
    with open(alerts_path, encoding="utf-8") as f:
        groups = yaml.safe_load(f)["groups"]
    if write:
        rule = {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {
                "name": "conduit",
                "labels": {"app.kubernetes.io/name": "conduit", "app.kubernetes.io/component": "server"},
            },
            "spec": {"groups": groups},
        }
        Path(rule_path).write_text(RULE_HEADER + dump(rule), encoding="utf-8")
        print(f"wrote {rule_path} from {alerts_path}")
        return 0
    docs = load_all(rule_path)
    if len(docs) != 1 or docs[0].get("kind") != "PrometheusRule":
        print(f"{rule_path}: expected one PrometheusRule")
        return 1
    ours = docs[0].get("spec", {}).get("groups")
    if ours == groups:
        print(f"ok  {rule_path} carries the {len(groups)} group(s) of {alerts_path}")
        return 0
    diff = difflib.unified_diff(
        dump(groups).splitlines(), dump(ours).splitlines(), alerts_path, rule_path + " (spec.groups)", lineterm=""
    )
    print("\n".join(diff))
    print(f"{rule_path} is out of date: run scripts/deploy-check --write-rules")
    return 1


def env_of(configmaps, container):
    """The container's environment from its ConfigMaps (envFrom) and literal env."""
    env = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref and ref["name"] in configmaps:
            env.update(configmaps[ref["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


def check_deployment(deployment, configmaps, problems):
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    server = containers.get("conduit")
    if server is None:
        problems.append(f"Deployment {name}: no container named conduit")
        return
    env = env_of(configmaps, server)
    try:
        sleep = int(server["lifecycle"]["preStop"]["sleep"]["seconds"])
        drain = int(env["SHUTDOWN_DRAIN_SECONDS"])
        grace = int(env["SHUTDOWN_GRACE_SECONDS"])
    except (KeyError, TypeError, ValueError) as e:
        problems.append(f"Deployment {name}: preStop sleep, SHUTDOWN_DRAIN_SECONDS or SHUTDOWN_GRACE_SECONDS missing ({e!r})")
        return
    period = int(pod.get("terminationGracePeriodSeconds", 30))
    if sleep != drain:
        problems.append(f"Deployment {name}: preStop sleep {sleep} s differs from SHUTDOWN_DRAIN_SECONDS {drain}")
    needed = sleep + drain + grace + POOL_CLOSE_SECONDS
    if period <= needed:
        problems.append(
            f"Deployment {name}: terminationGracePeriodSeconds {period} must exceed preStop {sleep} + drain {drain}"
            f" + grace {grace} + pools {POOL_CLOSE_SECONDS} = {needed}"
        )
    else:
        print(f"ok  {name}: stop sequence {sleep} + {drain} + {grace} + {POOL_CLOSE_SECONDS} = {needed} s < grace period {period} s")
    if env.get("MIGRATE_ON_START") != "false":
        problems.append(f"Deployment {name}: MIGRATE_ON_START must be false (the Job migrates)")


def rendered(rendered_path, out_dir):
    docs = load_all(rendered_path)
    out = Path(out_dir)
    problems, builtin, groups, operator = [], [], [], []
    configmaps = {
        d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap" and d.get("apiVersion") == "v1"
    }
    for doc in docs:
        api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        name = doc.get("metadata", {}).get("name", "?")
        if api.split("/")[0] == "monitoring.coreos.com":
            operator.append(doc)
            if kind == "PrometheusRule":
                groups.extend(doc.get("spec", {}).get("groups", []))
            continue
        builtin.append(doc)
        if kind == "Deployment":
            check_deployment(doc, configmaps, problems)
        for pod in pod_specs(doc):
            for c in pod.get("containers", []):
                image = c.get("image", "")
                if image == "conduit" or "example.invalid" in image:
                    problems.append(f"{kind} {name}: image {image!r} is the base's placeholder; the overlay must set it")
    out.mkdir(parents=True, exist_ok=True)
    (out / "builtin.yaml").write_text(yaml.safe_dump_all(builtin, sort_keys=False), encoding="utf-8")
    (out / "rules.yml").write_text(dump({"groups": groups}), encoding="utf-8")
    (out / "prometheus-operator.json").write_text(json.dumps(operator, indent=1), encoding="utf-8")
    if not groups:
        problems.append("no PrometheusRule groups in the rendered output")
    print(
        f"    {len(builtin)} built-in object(s) for kubernetes-validate, {len(operator)} of the Prometheus Operator's,"
        f" {len(groups)} rule group(s) for promtool"
    )
    for p in problems:
        print(f"FAIL {p}")
    return 1 if problems else 0


def pod_specs(doc):
    spec = doc.get("spec", {})
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return [spec.get("template", {}).get("spec", {})]
    if doc.get("kind") == "CronJob":
        return [spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})]
    if doc.get("kind") == "Pod":
        return [spec]
    return []


def pod(rendered_path, kind, name):
    """The first container of KIND NAME as the kubelet would start it, in JSON:
    its args, its environment from ConfigMaps and literal values, the Secret keys
    it references (required or optional), and, for a Deployment, the preStop
    sleep and the termination grace period. For scripts/deploy-check to run the
    real binary with the manifests' settings."""
    docs = load_all(rendered_path)
    configmaps = {
        d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap" and d.get("apiVersion") == "v1"
    }
    for doc in docs:
        if doc.get("kind") == kind and doc["metadata"]["name"] == name:
            spec = pod_specs(doc)[0]
            container = spec["containers"][0]
            secrets = []
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secrets.append(
                        {"name": var["name"], "secret": ref["name"], "key": ref["key"], "optional": bool(ref.get("optional", False))}
                    )
            for source in container.get("envFrom", []):
                ref = source.get("secretRef")
                if ref and not ref.get("optional", False):
                    secrets.append({"name": "*", "secret": ref["name"], "key": "*", "optional": False})
            sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            startup = container.get("startupProbe", {})
            print(
                json.dumps(
                    {
                        "args": container.get("command", []) + container.get("args", []),
                        "env": env_of(configmaps, container),
                        "secrets": secrets,
                        "preStopSleep": sleep,
                        "terminationGracePeriodSeconds": spec.get("terminationGracePeriodSeconds", 30),
                        # How long the kubelet lets it become ready before restarting it.
                        "startupSeconds": startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3),
                    }
                )
            )
            return 0
    print(f"no {kind} {name} in {rendered_path}", file=sys.stderr)
    return 1


def main(argv):
    if len(argv) >= 3 and argv[0] == "rules":
        return rules(argv[1], argv[2], write=argv[3:] == ["--write"])
    if len(argv) == 3 and argv[0] == "rendered":
        return rendered(argv[1], argv[2])
    if len(argv) == 4 and argv[0] == "pod":
        return pod(argv[1], argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
