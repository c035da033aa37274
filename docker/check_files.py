#!/usr/bin/env python3
"""Checks of the container files that need no Docker engine and no Kubernetes cluster.

Owns: reading docker/Dockerfile, docker/cluster.toml, docker/compose.yaml and
docker/k8s/*.yaml and checking that they are valid and agree with each other: the cluster
files load with `raftchroma.config.load_config`, compose services are the Raft hosts,
ports line up, the Raft port is never published, the k8s start script turns each pod into
a valid node, and the NetworkPolicy admits Raft traffic only from the StatefulSet's pods.
It also runs docker/healthcheck.py against a local stand-in server.
It must not need network access or Docker, and must not write outside a temp dir.

YAML checks need PyYAML; without it they are skipped (and reported as skipped).
Run: python docker/check_files.py    (exit 0: all checks passed)
"""

from __future__ import annotations

import http.server
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

DOCKER_DIR = Path(__file__).resolve().parent
REPO_ROOT = DOCKER_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from raftchroma.config import PASSWORD_ENV, ClusterConfig, ConfigError, load_config  # noqa: E402

try:
    import yaml
except ImportError:  # the YAML checks are skipped, the rest still runs
    yaml = None

API_PORT = 8000
RAFT_PORT = 7000
CONFIG_MOUNT = "/etc/raftchroma/cluster.toml"
DATA_MOUNT = "/data"
HEARTBEAT_PATH = "/api/v2/heartbeat"
SUBPROCESS_TIMEOUT_S = 20.0


class CheckFailed(AssertionError):
    """One check's finding, as a sentence for a person."""


def require(condition: Any, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def load_toml_config(text: str, environ: dict[str, str] | None = None) -> ClusterConfig:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cluster.toml"
        path.write_text(text)
        return load_config(path, environ=environ or {})


# ------------------------------------------------------------------- Dockerfile


def dockerfile_text() -> str:
    return (DOCKER_DIR / "Dockerfile").read_text()


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def dockerfile_uid(text: str) -> int:
    match = re.search(r"useradd[^\n]*--uid (\d+)", text.replace("\\\n", " "))
    require(match, "Dockerfile: the runtime user is created without a fixed --uid")
    return int(match.group(1))


def check_dockerfile() -> None:
    text = dockerfile_text()
    steps = dockerfile_instructions(text)
    froms = [args.split()[0] for word, args in steps if word == "FROM"]
    require(froms and all(f == "python:3.11-slim" for f in froms),
            f"Dockerfile: every stage must be python:3.11-slim, got {froms}")
    users = [args for word, args in steps if word == "USER"]
    require(users and users[-1] not in ("root", "0"), "Dockerfile: the final USER must not be root")
    require(dockerfile_uid(text) != 0, "Dockerfile: the runtime uid must not be 0")
    require(any(word == "ENV" and "ANONYMIZED_TELEMETRY=False" in args for word, args in steps),
            "Dockerfile: ANONYMIZED_TELEMETRY=False must be set")
    exposed = {p for word, args in steps if word == "EXPOSE" for p in args.split()}
    require({str(API_PORT), str(RAFT_PORT)} <= exposed, f"Dockerfile: must EXPOSE {API_PORT} and {RAFT_PORT}, got {exposed}")
    require(any(word == "VOLUME" and DATA_MOUNT in args for word, args in steps), "Dockerfile: VOLUME /data missing")
    require(any(word == "RUN" and re.search(r"pip (install|wheel)\b.*( \.|\*\.whl)", args) for word, args in steps),
            "Dockerfile: the project is not pip-installed")
    check_dockerfile_runtime(steps)


def check_dockerfile_runtime(steps: list[tuple[str, str]]) -> None:
    health = [args for word, args in steps if word == "HEALTHCHECK"]
    require(len(health) == 1 and "python" in health[0], "Dockerfile: one HEALTHCHECK, run with python")
    require("raftchroma-healthcheck" in health[0], "Dockerfile: HEALTHCHECK must run the installed healthcheck script")
    require(HEARTBEAT_PATH in (DOCKER_DIR / "healthcheck.py").read_text(), "healthcheck.py: must GET /api/v2/heartbeat")
    entry = " ".join(args for word, args in steps if word == "ENTRYPOINT")
    require(f"raftchroma serve --config {CONFIG_MOUNT} --node" in entry and "$RAFTCHROMA_NODE_ID" in entry,
            f"Dockerfile: ENTRYPOINT must run `raftchroma serve --config {CONFIG_MOUNT} --node $RAFTCHROMA_NODE_ID`")
    require("exec raftchroma" in entry, "Dockerfile: the shell must exec raftchroma, or SIGTERM stops at the shell")
    ignore = (DOCKER_DIR / "Dockerfile.dockerignore").read_text().split()
    for word, args in steps:
        if word == "COPY" and not args.startswith("--from"):
            source = args.split()[0]
            if source != ".":
                require((REPO_ROOT / source).exists(), f"Dockerfile: COPY source {source} does not exist")
                require(f"!{source}" in ignore, f"Dockerfile.dockerignore: {source} is excluded from the context")
    for needed in ("pyproject.toml", "raftchroma/"):
        require(f"!{needed}" in ignore, f"Dockerfile.dockerignore: {needed} must be in the build context")


# --------------------------------------------------------------- cluster.toml


def docker_config() -> ClusterConfig:
    return load_config(DOCKER_DIR / "cluster.toml", environ={})


def check_docker_cluster_toml() -> None:
    config = docker_config()
    require(len(config.nodes) == 3, f"docker/cluster.toml: expected 3 nodes, got {len(config.nodes)}")
    require([n.id for n in config.nodes] == ["n1", "n2", "n3"], "docker/cluster.toml: node ids must be n1, n2, n3")
    require(config.password is None, "docker/cluster.toml: the password belongs in RAFTCHROMA_PASSWORD, not the file")
    with_env = load_config(DOCKER_DIR / "cluster.toml", environ={PASSWORD_ENV: "s3cret"})
    require(with_env.password == "s3cret", "docker/cluster.toml: RAFTCHROMA_PASSWORD is not picked up")
    for node in config.nodes:
        require(node.raft_host == node.id and node.raft_port == RAFT_PORT,
                f"docker/cluster.toml: {node.id} raft must be {node.id}:{RAFT_PORT}, got {node.raft_address}")
        require(node.http_host == node.id and node.http_port == API_PORT,
                f"docker/cluster.toml: {node.id} http must be {node.id}:{API_PORT} (healthcheck and status use it)")
        require(Path(DATA_MOUNT) in node.data_dir.parents, f"docker/cluster.toml: {node.id} data_dir must be under /data")


# ------------------------------------------------------------------ healthcheck


class _Heartbeat(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        ok = self.path == HEARTBEAT_PATH
        body = b'{"nanosecond heartbeat": 1}' if ok else b""
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def run_healthcheck(config_path: Path, node_id: str) -> int:
    env = dict(os.environ, RAFTCHROMA_CONFIG=str(config_path), RAFTCHROMA_NODE_ID=node_id,
               PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run([sys.executable, str(DOCKER_DIR / "healthcheck.py")], env=env, capture_output=True,
                          timeout=SUBPROCESS_TIMEOUT_S)
    return done.returncode


def check_healthcheck_script() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Heartbeat)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "cluster.toml"
        config_path.write_text(f'[[node]]\nid = "n1"\nraft = "127.0.0.1:1"\nhttp = "0.0.0.0:{port}"\ndata_dir = "d"\n')
        try:
            require(run_healthcheck(config_path, "n1") == 0, "healthcheck.py: fails against a live heartbeat")
            require(run_healthcheck(config_path, "nope") == 1, "healthcheck.py: passes for an unknown node id")
        finally:
            server.shutdown()
            server.server_close()
        require(run_healthcheck(config_path, "n1") == 1, "healthcheck.py: passes with no server listening")


# ---------------------------------------------------------------------- compose


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER_DIR / "compose.yaml").read_text())


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def published_ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each published port."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append((str(port.get("host_ip", "")), int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        require(len(parts) == 3, f"compose: port {port!r} must name the host ip (127.0.0.1:HOST:CONTAINER)")
        out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


def check_compose() -> None:
    doc = compose()
    services = doc["services"]
    config = docker_config()
    require(sorted(services) == sorted(n.id for n in config.nodes),
            f"compose: services {sorted(services)} must be the cluster's raft hosts {[n.raft_host for n in config.nodes]}")
    host_ports, volumes_used = set(), set()
    for node in config.nodes:
        service = services[node.id]
        check_compose_service(node.id, service, node.http_port)
        host_ports.update(p[1] for p in published_ports(service))
        volumes_used.update(mount.split(":")[0] for mount in service["volumes"] if mount.split(":")[1] == DATA_MOUNT)
    require(host_ports == {8001, 8002, 8003}, f"compose: API host ports must be 8001..8003, got {sorted(host_ports)}")
    require(len(volumes_used) == 3 and volumes_used <= set(doc.get("volumes") or {}),
            f"compose: each node needs its own declared named volume at /data, got {sorted(volumes_used)}")


def check_compose_service(name: str, service: dict[str, Any], http_port: int) -> None:
    build = service.get("build") or {}
    require(build.get("context") == "..", f"compose {name}: build context must be '..'")
    require((DOCKER_DIR / build["context"] / build["dockerfile"]).resolve() == DOCKER_DIR / "Dockerfile",
            f"compose {name}: build.dockerfile must be docker/Dockerfile")
    env = env_of(service)
    require(env.get("RAFTCHROMA_NODE_ID") == name, f"compose {name}: RAFTCHROMA_NODE_ID must be {name}")
    require(re.fullmatch(r"\$\{RAFTCHROMA_PASSWORD:-.+\}", env.get(PASSWORD_ENV, "")),
            f"compose {name}: RAFTCHROMA_PASSWORD must be ${{RAFTCHROMA_PASSWORD:-placeholder}}")
    require(service.get("restart") == "unless-stopped", f"compose {name}: restart must be unless-stopped")
    require(service.get("stop_grace_period"), f"compose {name}: stop_grace_period missing")
    ports = published_ports(service)
    require(len(ports) == 1 and ports[0][0] == "127.0.0.1" and ports[0][2] == http_port,
            f"compose {name}: publish exactly the API port {http_port}, on 127.0.0.1, got {ports}")
    require(all(container != RAFT_PORT for _, _, container in ports), f"compose {name}: the raft port is published")
    require(f"./cluster.toml:{CONFIG_MOUNT}:ro" in service["volumes"], f"compose {name}: cluster.toml not mounted read-only")


# -------------------------------------------------------------------------- k8s


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    k8s = DOCKER_DIR / "k8s"
    listed = yaml.safe_load((k8s / "kustomization.yaml").read_text())["resources"]
    on_disk = sorted(p.name for p in k8s.glob("*.yaml") if p.name != "kustomization.yaml")
    require(sorted(listed) == on_disk, f"k8s: kustomization lists {sorted(listed)}, directory has {on_disk}")
    objects = {}
    for name in listed:
        for doc in yaml.safe_load_all((k8s / name).read_text()):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                require(key not in objects, f"k8s: {key} defined twice")
                objects[key] = doc
    return objects


def one(objects: dict[tuple[str, str], dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [doc for (k, n), doc in objects.items() if k == kind and (name is None or n == name)]
    require(len(found) == 1, f"k8s: expected one {kind}{' ' + name if name else ''}, found {len(found)}")
    return found[0]


def selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_k8s() -> None:
    objects = k8s_objects()
    sts = one(objects, "StatefulSet")
    pod = sts["spec"]["template"]
    labels = pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]
    require(selects(sts["spec"]["selector"]["matchLabels"], labels), "k8s: StatefulSet selector misses its pods")
    configmap = configmap_of(objects, sts)
    config = check_k8s_configmap(configmap, sts, container)
    check_k8s_services(objects, sts, labels)
    check_k8s_pod(objects, sts, container)
    check_k8s_network_policy(one(objects, "NetworkPolicy"), labels)
    require(selects(one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels),
            "k8s: PodDisruptionBudget misses the pods")
    check_k8s_start_script(container, configmap["data"]["cluster.toml"], config)


def configmap_of(objects: Any, sts: dict[str, Any]) -> dict[str, Any]:
    volume = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    configmap = one(objects, "ConfigMap", volume["configMap"]["name"])
    mounts = {m["name"]: m["mountPath"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    require(mounts.get(volume["name"]) == str(Path(CONFIG_MOUNT).parent), "k8s: ConfigMap not mounted at /etc/raftchroma")
    return configmap


def container_ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def check_k8s_configmap(configmap: dict[str, Any], sts: dict[str, Any], container: dict[str, Any]) -> ClusterConfig:
    config = load_toml_config(configmap["data"]["cluster.toml"])
    name, peers = sts["metadata"]["name"], sts["spec"]["serviceName"]
    expected = [f"{name}-{i}" for i in range(sts["spec"]["replicas"])]
    require([n.id for n in config.nodes] == expected, f"k8s ConfigMap: node ids must be the pod names {expected}")
    require(config.password is None, "k8s ConfigMap: the password belongs in the Secret")
    ports = container_ports(container)
    for node in config.nodes:
        require(node.raft_address == f"{node.id}.{peers}:{ports['raft']}",
                f"k8s ConfigMap: {node.id} raft must be {node.id}.{peers}:{ports['raft']}, got {node.raft_address}")
        require((node.http_host, node.http_port) == (f"{node.id}.{peers}", ports["http"]),
                f"k8s ConfigMap: {node.id} http must be {node.id}.{peers}:{ports['http']}")
        require(Path(DATA_MOUNT) in node.data_dir.parents, f"k8s ConfigMap: {node.id} data_dir must be under /data")
    return config


def check_k8s_services(objects: Any, sts: dict[str, Any], labels: dict[str, str]) -> None:
    services = [doc for (kind, _), doc in objects.items() if kind == "Service"]
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
    clients = [s for s in services if s["spec"].get("clusterIP") != "None"]
    require(len(headless) == 1 and headless[0]["metadata"]["name"] == sts["spec"]["serviceName"],
            "k8s: one headless Service, named as the StatefulSet's serviceName")
    require(headless[0]["spec"].get("publishNotReadyAddresses") is True,
            "k8s: the peer Service must publish not-ready pods, or peers cannot find each other while starting")
    require(any(p.get("targetPort") in ("raft", RAFT_PORT) for p in headless[0]["spec"]["ports"]),
            "k8s: the peer Service lacks the raft port")
    require(len(clients) == 1, "k8s: one client Service for the API")
    require(all(p.get("targetPort") in ("http", API_PORT) for p in clients[0]["spec"]["ports"]),
            "k8s: the client Service must expose only the API")
    for service in services:
        require(selects(service["spec"]["selector"], labels), f"k8s: Service {service['metadata']['name']} misses the pods")


def check_k8s_pod(objects: Any, sts: dict[str, Any], container: dict[str, Any]) -> None:
    pod_spec = sts["spec"]["template"]["spec"]
    env = {e["name"]: e for e in container["env"]}
    secret_ref = env[PASSWORD_ENV]["valueFrom"]["secretKeyRef"]
    secret = one(objects, "Secret", secret_ref["name"])
    require(secret_ref["key"] in (secret.get("stringData") or secret.get("data") or {}),
            "k8s: RAFTCHROMA_PASSWORD refers to a key the Secret lacks")
    require(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", "k8s: POD_NAME must be the pod name")
    require(pod_spec["securityContext"].get("runAsUser") == dockerfile_uid(dockerfile_text()),
            "k8s: runAsUser must be the image's uid")
    ports = container_ports(container)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        require(get["path"] == HEARTBEAT_PATH and ports.get(get["port"], get["port"]) == API_PORT,
                f"k8s: {probe} must GET {HEARTBEAT_PATH} on {API_PORT}")
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    data_mounts = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == DATA_MOUNT]
    require(data_mounts and data_mounts[0] in claims, "k8s: /data must be a volumeClaimTemplate's volume")


def allows_port(rule: dict[str, Any], port: int, name: str) -> bool:
    ports = rule.get("ports")
    return not ports or any(p.get("port") in (port, name) or p.get("port") is None for p in ports)


def check_k8s_network_policy(policy: dict[str, Any], labels: dict[str, str]) -> None:
    spec = policy["spec"]
    require(selects(spec["podSelector"]["matchLabels"], labels), "k8s NetworkPolicy: must select the raftchroma pods")
    require("Ingress" in spec.get("policyTypes", []), "k8s NetworkPolicy: must restrict Ingress")
    raft_rules = [r for r in spec.get("ingress", []) if allows_port(r, RAFT_PORT, "raft")]
    require(raft_rules, "k8s NetworkPolicy: no rule admits raft traffic between the pods")
    for rule in raft_rules:
        peers = rule.get("from") or []
        require(peers and all(set(p) == {"podSelector"} and selects(p["podSelector"].get("matchLabels"), labels)
                              for p in peers),
                f"k8s NetworkPolicy: a rule admits the raft port from outside the StatefulSet: {rule}")


def check_k8s_start_script(container: dict[str, Any], toml_text: str, config: ClusterConfig) -> None:
    """Run the container's start script for every pod name, with a stand-in `raftchroma`."""
    command = container["command"]
    require(command[:2] == ["/bin/sh", "-c"], "k8s: the container command must be `/bin/sh -c SCRIPT`")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        src, dst, args_file = tmp_path / "src.toml", tmp_path / "dst.toml", tmp_path / "args"
        src.write_text(toml_text)
        script = command[2].replace(CONFIG_MOUNT, str(src)).replace("/tmp/cluster.toml", str(dst))
        fake = tmp_path / "bin" / "raftchroma"
        fake.parent.mkdir()
        fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {shlex.quote(str(args_file))}\n')
        fake.chmod(0o755)
        env = dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}")
        for node in config.nodes:
            done = subprocess.run(["/bin/sh", "-c", script], env=dict(env, POD_NAME=node.id), capture_output=True,
                                  timeout=SUBPROCESS_TIMEOUT_S)
            require(done.returncode == 0, f"k8s start script fails for {node.id}: {done.stderr.decode().strip()}")
            require(args_file.read_text().split() == ["serve", "--config", str(dst), "--node", node.id],
                    f"k8s start script for {node.id} runs: {args_file.read_text().split()}")
            own = load_config(dst, environ={}).node(node.id)
            require((own.http_host, own.http_port) == ("0.0.0.0", API_PORT),
                    f"k8s start script: {node.id} must bind its API on 0.0.0.0:{API_PORT}")
        done = subprocess.run(["/bin/sh", "-c", script], env=dict(env, POD_NAME="stranger-7"), capture_output=True,
                              timeout=SUBPROCESS_TIMEOUT_S)
        require(done.returncode != 0, "k8s start script starts a pod whose name is not a node id")




# ------------------------------------------------------------------------ main


def checks() -> Iterator[tuple[str, Callable[[], None] | None]]:
    yield "Dockerfile", check_dockerfile
    yield "docker/cluster.toml", check_docker_cluster_toml
    yield "healthcheck.py against a stand-in server", check_healthcheck_script
    yield "compose.yaml vs cluster.toml", check_compose if yaml else None
    yield "k8s manifests, ConfigMap cluster.toml, start script", check_k8s if yaml else None


def main() -> int:
    print(f"PyYAML: {'available, version ' + yaml.__version__ if yaml else 'NOT installed (YAML checks skipped)'}")
    failures = 0
    for title, check in checks():
        if check is None:
            print(f"SKIP  {title}")
            continue
        try:
            check()
        except (CheckFailed, ConfigError, KeyError, StopIteration, subprocess.TimeoutExpired) as exc:
            failures += 1
            print(f"FAIL  {title}: {type(exc).__name__}: {exc}")
        else:
            print(f"ok    {title}")
    print("all checks passed" if not failures else f"{failures} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
