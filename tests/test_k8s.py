"""The Kubernetes overlays: rendered by `kubectl kustomize`, validated against the Kubernetes
schemas (kubernetes-validate, strict), and held to the code: every OMNIFORGE_* variable they
set is one the code reads, every port is the one the process listens on, every probe names a
port the container has, and every omniforge image is a target of deploy/Dockerfile."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ("cpu", "gpu")
KUBERNETES = "1.32.0"
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}      # validated by their operators, not here

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")


def render(overlay: str) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def settings_variables() -> set[str]:
    """Every environment variable a settings class of ours reads, plus the few read directly."""
    from pydantic import AliasChoices

    from omniforge_audio.settings import AudioServiceSettings
    from omniforge_fusion.settings import FusionServiceSettings
    from omniforge_gateway.settings import GatewaySettings
    from omniforge_image.settings import ImageServiceSettings
    from omniforge_shared.jobs.queue import TrainingSettings
    from omniforge_shared.registry_settings import RegistrySettings
    from omniforge_text.settings import TextServiceSettings
    from omniforge_training.jobs.worker import WorkerSettings

    names = {"OMNIFORGE_HOME", "OMNIFORGE_LOG_FORMAT"}      # read with os.environ (settings.py, logs.py)
    for cls in (AudioServiceSettings, FusionServiceSettings, GatewaySettings, ImageServiceSettings, TrainingSettings,
                RegistrySettings, TextServiceSettings, WorkerSettings):
        prefix = cls.model_config.get("env_prefix", "")
        for field, info in cls.model_fields.items():
            names.add(f"{prefix}{field}".upper())
            if isinstance(info.validation_alias, AliasChoices):
                names |= {a for a in info.validation_alias.choices if isinstance(a, str) and a.isupper()}
    return names


def containers(docs):
    for d in docs:
        spec = d.get("spec", {}).get("template", {}).get("spec")
        if spec:
            for c in spec["containers"]:
                yield d, c


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_the_kubernetes_schemas(overlay, tmp_path):
    import kubernetes_validate

    docs = render(overlay)
    kinds = {(d["apiVersion"], d["kind"]) for d in docs}
    assert {("apps/v1", "Deployment"), ("v1", "Service"), ("autoscaling/v2", "HorizontalPodAutoscaler"),
            ("networking.k8s.io/v1", "Ingress"), ("v1", "ConfigMap"), ("v1", "Secret"),
            ("monitoring.coreos.com/v1", "ServiceMonitor")} <= kinds
    for d in docs:
        if (d["apiVersion"], d["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(d, KUBERNETES, strict=True)


def test_the_gpu_overlay_sizes_gpus_per_service_and_runs_triton():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in render("gpu")}
    for name in ("text", "image", "audio", "triton", "worker-gpu"):
        pod = docs[("Deployment", name)]["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1, name
        assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"]), name
    text = docs[("Deployment", "text")]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in text["env"]}
    assert env["OMNIFORGE_TEXT_BACKEND"] == "triton" and env["OMNIFORGE_TEXT_TRITON_URL"] == "triton:8001"
    assert "nvidia.com/gpu" not in str(render("cpu"))
    hpa = docs[("HorizontalPodAutoscaler", "text")]["spec"]["metrics"]
    assert any(m["type"] == "Pods" and m["pods"]["metric"]["name"] == "omniforge_text_engine_queue_depth_requests"
               for m in hpa)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_port_probe_and_image_exists_in_the_code(overlay):
    docs = render(overlay)
    known = settings_variables()
    config = {}
    for d in docs:
        if d["kind"] in ("ConfigMap", "Secret"):
            config.update(d.get("data") or {})
            config.update(d.get("stringData") or {})
    set_vars = {k for k in config if k.startswith("OMNIFORGE_")}
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM \S+ AS ([a-z-]+)$", dockerfile, re.M))
    for d, c in containers(docs):
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        set_vars |= {k for k in env if k.startswith("OMNIFORGE_")}
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            p = c.get(probe)
            if p:
                port = (p.get("grpc") or p.get("httpGet") or p.get("tcpSocket") or {}).get("port")
                if port is not None:
                    assert port in ports or port in ports.values(), f"{d['metadata']['name']}: {probe} port {port}"
        image = c["image"].split(":")[0]
        if image.startswith("omniforge/"):
            target = image.removeprefix("omniforge/").removesuffix("-cuda")
            assert target in targets, f"{image}: no `FROM ... AS {target}` in deploy/Dockerfile"
            component = {"trainer": "WORKER"}.get(target, target.upper())
            # the ports a component listens on: the variables this container sets, else the defaults
            for name, var in (("grpc", f"OMNIFORGE_{component}_PORT"), ("http", f"OMNIFORGE_{component}_PORT"),
                              ("metrics", f"OMNIFORGE_{component}_METRICS_PORT")):
                if name in ports:
                    listens = int(env.get(var) or config.get(var) or _default_port(var))
                    assert ports[name] == listens, f"{image}: {name} port {ports[name]} but it listens on {listens}"
    unknown = sorted(set_vars - known)
    assert not unknown, f"variables the code never reads: {unknown}"


def _default_port(var: str) -> int:
    """The default of the settings field a port variable sets."""
    from omniforge_audio.settings import AudioServiceSettings
    from omniforge_fusion.settings import FusionServiceSettings
    from omniforge_gateway.settings import GatewaySettings
    from omniforge_image.settings import ImageServiceSettings
    from omniforge_text.settings import TextServiceSettings
    from omniforge_training.jobs.worker import WorkerSettings

    for cls in (AudioServiceSettings, FusionServiceSettings, GatewaySettings, ImageServiceSettings,
                TextServiceSettings, WorkerSettings):
        prefix = cls.model_config["env_prefix"]
        field = var.removeprefix(prefix).lower()
        if var.startswith(prefix) and field in cls.model_fields:
            return cls.model_fields[field].default
    raise KeyError(var)
