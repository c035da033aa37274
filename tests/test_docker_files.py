"""The container files (docker/) checked without a Docker engine or a Kubernetes cluster.

They are parsed (PyYAML, the Dockerfile by hand) and checked against the code they drive: the
command lines use options the click CLI has, every RAFTCHROMA_* variable is one the code reads,
ports agree with the cluster files and the image's listen addresses, probes point at /readyz and
/livez, Prometheus is told where /metrics is, and no secret has a default value anywhere.
docker/healthcheck.py runs against a local stand-in server.
"""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import click
import pytest
import yaml

from raftchroma import cli
from raftchroma.config import SECRET_ENV, ClusterConfig, load_config, with_node_overrides

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
K8S = DOCKER / "k8s"
API_PORT = 8000
RAFT_PORT = 7000
DATA_MOUNT = Path("/data")
SUBPROCESS_TIMEOUT_S = 20.0


# ------------------------------------------------------------------ what the code accepts


def code_env_names() -> set[str]:
    """RAFTCHROMA_* variables the code reads: the CLI's envvars and names written in the package."""
    names = {p.envvar for command in cli.main.commands.values() for p in command.params if isinstance(p.envvar, str)}
    for path in (REPO / "raftchroma").rglob("*.py"):
        names.update(re.findall(r"[\"'](RAFTCHROMA_[A-Z_]+)[\"']", path.read_text()))
    return names


def parse_cli(args: list[str]) -> click.Context:
    """Parse `raftchroma ARGS` with the real click CLI (UsageError on an unknown option)."""
    command = cli.main.commands.get(args[0]) if args else None
    if command is None:
        raise click.UsageError(f"no such command: {args[:1]}")
    return command.make_context(args[0], list(args[1:]))


def test_the_checks_see_the_cli_and_reject_an_unknown_option() -> None:
    assert {"RAFTCHROMA_CONFIG", "RAFTCHROMA_NODE", "RAFTCHROMA_HTTP_LISTEN", "RAFTCHROMA_RAFT_LISTEN",
            "RAFTCHROMA_DATA_DIR", "RAFTCHROMA_LOG_FORMAT"} <= code_env_names()
    assert parse_cli(["serve", "--node", "n1"]).params["node_id"] == "n1"
    with pytest.raises(click.UsageError):
        parse_cli(["serve", "--no-such-option"])


def check_env(env: dict[str, Any], where: str) -> None:
    unknown = {name for name in env if name.startswith("RAFTCHROMA_")} - code_env_names()
    assert not unknown, f"{where}: variables no code reads: {sorted(unknown)}"


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


# -------------------------------------------------------------------------- Dockerfile


def dockerfile_steps() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = (DOCKER / "Dockerfile").read_text()
    lines = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    steps = []
    for line in re.sub(r"\\\n", " ", lines).splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            steps.append((word.upper(), rest.strip()))
    return steps


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in dockerfile_steps():
        if word == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", args))
    return env


def test_dockerfile_runs_raftchroma_serve_as_non_root_configured_by_env() -> None:
    steps = dockerfile_steps()
    assert {args.split()[0] for word, args in steps if word == "FROM"} == {"python:3.11-slim"}
    assert [args for word, args in steps if word == "USER"][-1] not in ("root", "0")
    entry = yaml.safe_load(next(args for word, args in steps if word == "ENTRYPOINT"))  # exec form is JSON
    assert entry[0] == "raftchroma"
    assert parse_cli(entry[1:]).command.name == "serve"
    env = image_env()
    check_env(env, "Dockerfile ENV")
    assert env["ANONYMIZED_TELEMETRY"] == "False"
    exposed = {int(p) for word, args in steps if word == "EXPOSE" for p in args.split()}
    assert exposed == {API_PORT, RAFT_PORT}
    assert port_of(env["RAFTCHROMA_HTTP_LISTEN"]) == API_PORT and port_of(env["RAFTCHROMA_RAFT_LISTEN"]) == RAFT_PORT
    assert any(word == "VOLUME" and str(DATA_MOUNT) in args for word, args in steps)
    health = [args for word, args in steps if word == "HEALTHCHECK"]
    assert len(health) == 1 and "raftchroma-healthcheck" in health[0] and "--ready" not in health[0]


def test_dockerfile_copies_only_what_the_build_context_admits() -> None:
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    for word, args in dockerfile_steps():
        if word == "COPY" and not args.startswith("--from") and args.split()[0] != ".":
            source = args.split()[0]
            assert (REPO / source).exists() and f"!{source}" in ignore, source
    assert {"!pyproject.toml", "!raftchroma/"} <= set(ignore)


# ------------------------------------------------------------------------ cluster files


def image_config() -> ClusterConfig:
    return load_config(DOCKER / "cluster.toml", environ={})


def test_image_cluster_file_advertises_service_names_on_the_image_ports() -> None:
    config = image_config()
    assert [n.id for n in config.nodes] == ["n1", "n2", "n3"]
    assert config.secret is None, "the secret belongs in RAFTCHROMA_SECRET, not the file"
    env = image_env()
    for node in config.nodes:
        assert node.raft_address == f"{node.id}:{RAFT_PORT}" and (node.http_host, node.http_port) == (node.id, API_PORT)
        assert DATA_MOUNT in node.data_dir.parents
        bound = with_node_overrides(config, node.id, env["RAFTCHROMA_RAFT_LISTEN"], env["RAFTCHROMA_HTTP_LISTEN"])
        assert bound.node(node.id).raft_bind_address == f"0.0.0.0:{RAFT_PORT}"
        assert bound.node(node.id).http_bind == ("0.0.0.0", API_PORT)


# ----------------------------------------------------------------------------- compose


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def published_ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    out = []
    for port in service.get("ports") or []:
        parts = str(port).split("/")[0].split(":")
        assert len(parts) == 3, f"port {port!r} must name the host ip (127.0.0.1:HOST:CONTAINER)"
        out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


@pytest.mark.parametrize("name", ["n1", "n2", "n3"])
def test_compose_service_is_its_node_with_a_required_secret_and_readiness(name: str) -> None:
    service = compose()["services"][name]
    env = {k: str(v) for k, v in service["environment"].items()}
    check_env(env, f"compose {name}")
    assert env["RAFTCHROMA_NODE"] == name
    assert re.fullmatch(r"\$\{RAFTCHROMA_SECRET:\?[^}]+\}", env[SECRET_ENV]), "the secret must be required, no default"
    assert "command" not in service and "entrypoint" not in service, "the image's `raftchroma serve` runs as it is"
    assert published_ports(service) == [("127.0.0.1", 8000 + int(name[1:]), API_PORT)], "publish only the API, locally"
    assert f"./cluster.toml:{image_env()['RAFTCHROMA_CONFIG']}:ro" in service["volumes"]
    assert any(v.split(":")[1] == str(DATA_MOUNT) for v in service["volumes"])
    assert service["restart"] == "unless-stopped"
    assert service["healthcheck"]["test"][-2:] == ["/usr/local/bin/raftchroma-healthcheck", "--ready"]
    labels = service["labels"]
    assert (labels["prometheus.io/scrape"], labels["prometheus.io/port"], labels["prometheus.io/path"]) == \
        ("true", str(API_PORT), "/metrics")


def test_compose_services_are_the_cluster_file_nodes_with_their_own_volumes() -> None:
    doc = compose()
    assert sorted(doc["services"]) == [n.raft_host for n in image_config().nodes]
    data = {v.split(":")[0] for s in doc["services"].values() for v in s["volumes"] if v.split(":")[1] == "/data"}
    assert len(data) == 3 and data <= set(doc["volumes"])


# --------------------------------------------------------------------------------- k8s


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name not in ("kustomization.yaml", "secret.yaml"))
    assert sorted(listed) == on_disk, "kustomization must list every manifest but secret.yaml"
    objects = {}
    for name in [*listed, "secret.yaml"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [doc for (k, n), doc in k8s_objects().items() if k == kind and (name is None or n == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}"
    return found[0]


def container() -> dict[str, Any]:
    return one("StatefulSet")["spec"]["template"]["spec"]["containers"][0]


def container_env() -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container()["env"]}


def test_k8s_secret_has_no_value_and_the_pods_require_it() -> None:
    secret = one("Secret")
    assert not secret.get("data") and not secret.get("stringData")
    ref = container_env()[SECRET_ENV]
    assert "value" not in ref
    key_ref = ref["valueFrom"]["secretKeyRef"]
    assert (key_ref["name"], key_ref["key"]) == (secret["metadata"]["name"], "secret")
    assert key_ref.get("optional", False) is False
    assert f"kubectl create secret generic {secret['metadata']['name']} --from-literal=secret=" in \
        (K8S / "secret.yaml").read_text()


def test_k8s_pod_runs_the_image_entrypoint_with_env_settings_only() -> None:
    c = container()
    assert "command" not in c, "the image's `raftchroma serve` runs; no script rewrites the config"
    assert not c.get("args") or parse_cli(["serve", *c["args"]]).command.name == "serve"
    assert "sed " not in (K8S / "statefulset.yaml").read_text()
    env = container_env()
    check_env(env, "StatefulSet")
    assert env["RAFTCHROMA_NODE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": API_PORT, "raft": RAFT_PORT}
    assert env["RAFTCHROMA_HTTP_LISTEN"]["value"] == f"0.0.0.0:{ports['http']}"
    assert env["RAFTCHROMA_RAFT_LISTEN"]["value"] == f"0.0.0.0:{ports['raft']}"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    config_volume = next(v for v in one("StatefulSet")["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    assert env["RAFTCHROMA_CONFIG"]["value"] == mounts[config_volume["name"]] + "/cluster.toml"


def test_k8s_probes_and_scrape_annotations() -> None:
    c = container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    paths = {probe: (c[probe]["httpGet"]["path"], ports[c[probe]["httpGet"]["port"]])
             for probe in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert paths == {"startupProbe": ("/livez", API_PORT), "readinessProbe": ("/readyz", API_PORT),
                     "livenessProbe": ("/livez", API_PORT)}
    notes = one("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert (notes["prometheus.io/scrape"], notes["prometheus.io/port"], notes["prometheus.io/path"]) == \
        ("true", str(API_PORT), "/metrics")


def test_k8s_configmap_nodes_are_the_pods_and_bind_what_the_env_says(tmp_path: Path) -> None:
    sts = one("StatefulSet")
    path = tmp_path / "cluster.toml"
    path.write_text(one("ConfigMap", "raftchroma-config")["data"]["cluster.toml"])
    config = load_config(path, environ={})
    name, peers = sts["metadata"]["name"], sts["spec"]["serviceName"]
    assert [n.id for n in config.nodes] == [f"{name}-{i}" for i in range(sts["spec"]["replicas"])]
    assert config.secret is None
    env = container_env()
    for node in config.nodes:
        assert node.raft_address == f"{node.id}.{peers}:{RAFT_PORT}"
        assert (node.http_host, node.http_port) == (f"{node.id}.{peers}", API_PORT)
        assert DATA_MOUNT in node.data_dir.parents
        bound = with_node_overrides(config, node.id, env["RAFTCHROMA_RAFT_LISTEN"]["value"],
                                    env["RAFTCHROMA_HTTP_LISTEN"]["value"]).node(node.id)
        assert (bound.raft_bind_address, bound.http_bind) == (f"0.0.0.0:{RAFT_PORT}", ("0.0.0.0", API_PORT))


def test_k8s_scale_up_as_documented_adds_a_join_node_the_members_leave_out(tmp_path: Path) -> None:
    """docs/OPERATIONS.md ("Membership", Kubernetes): add a `join = true` table for the next ordinal,
    raise `replicas`, then `raftchroma cluster add ... --promote`. The file still parses, the pods
    already running do not count the new one (their bootstrap), the new pod knows them all, and the
    command line the docs give parses."""
    from raftchroma.replication import membership_of_config

    sts = one("StatefulSet")
    name, peers = sts["metadata"]["name"], sts["spec"]["serviceName"]
    new_id = f"{name}-{sts['spec']['replicas']}"
    grown = one("ConfigMap", "raftchroma-config")["data"]["cluster.toml"] + (
        f'\n[[node]]\nid = "{new_id}"\nraft = "{new_id}.{peers}:{RAFT_PORT}"\n'
        f'http = "{new_id}.{peers}:{API_PORT}"\ndata_dir = "{DATA_MOUNT}/{new_id}"\njoin = true\n')
    path = tmp_path / "cluster.toml"
    path.write_text(grown)
    config = load_config(path, environ={})
    first = [m.id for m in membership_of_config(config).members]
    assert first == [f"{name}-{i}" for i in range(sts["spec"]["replicas"])]
    joiner_view = membership_of_config(config, without=new_id, joiners_as_non_voters=True)
    assert [m.id for m in joiner_view.voters] == first
    docs = (REPO / "docs" / "OPERATIONS.md").read_text()
    assert f"raftchroma cluster add raftchroma-3 --raft\n  raftchroma-3.{peers}:{RAFT_PORT} --http raftchroma-3.{peers}:{API_PORT} --promote" in docs
    params = cli.cluster.commands["add"].make_context("add", [
        new_id, "--raft", f"{new_id}.{peers}:{RAFT_PORT}", "--http", f"{new_id}.{peers}:{API_PORT}", "--promote"]).params
    assert (params["raft_address"], params["promote"]) == (f"{new_id}.{peers}:{RAFT_PORT}", True)


def selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_k8s_services_policy_and_budget_select_the_pods() -> None:
    sts = one("StatefulSet")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    services = [doc for (kind, _), doc in k8s_objects().items() if kind == "Service"]
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
    assert [s["metadata"]["name"] for s in headless] == [sts["spec"]["serviceName"]]
    assert headless[0]["spec"]["publishNotReadyAddresses"] is True, "peers must find each other before ready"
    assert all(selects(s["spec"]["selector"], labels) for s in services)
    policy = one("NetworkPolicy")["spec"]
    raft_rules = [r for r in policy["ingress"] if any(p.get("port") in (RAFT_PORT, "raft") for p in r.get("ports", []))]
    assert raft_rules and all(r["from"] == [{"podSelector": {"matchLabels": labels}}] for r in raft_rules)
    assert selects(one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)


# ------------------------------------------------------------------------ no secret default


def test_no_published_placeholder_secret_anywhere() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        path = REPO / name
        if path.suffix in (".yaml", ".yml", ".toml", ".md", "") and path.is_file():
            text = path.read_text(errors="replace")
            assert "change-me" not in text, name
            assert not re.search(r"RAFTCHROMA_(SECRET|PASSWORD):-", text), f"{name}: a default secret"


# ------------------------------------------------------------------------- healthcheck


class _Probes(http.server.BaseHTTPRequestHandler):
    answers = {"/livez": 200, "/readyz": 503}

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        status = self.answers.get(self.path, 404)
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Probes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def healthcheck(config: Path, node: str, *args: str, **env: str) -> int:
    full = dict(os.environ, RAFTCHROMA_CONFIG=str(config), RAFTCHROMA_NODE=node, PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, str(DOCKER / "healthcheck.py"), *args], env=full, capture_output=True,
                          timeout=SUBPROCESS_TIMEOUT_S).returncode


def test_healthcheck_probes_livez_or_readyz_on_the_listen_address(tmp_path: Path, stand_in: int) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text('[[node]]\nid = "n1"\nraft = "127.0.0.1:1"\nhttp = "nowhere.invalid:8000"\ndata_dir = "d"\n')
    listen = {"RAFTCHROMA_HTTP_LISTEN": f"0.0.0.0:{stand_in}"}
    assert healthcheck(config, "n1", **listen) == 0
    assert healthcheck(config, "n1", "--ready", **listen) == 1  # the stand-in answers 503
    assert healthcheck(config, "nope", **listen) == 1
    assert healthcheck(config, "n1") == 1  # the advertised name does not resolve: the listen address matters
