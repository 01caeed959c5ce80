"""The models a service serves, keyed by name: one engine per model, built by the service's
engine factory from a bundle of the service's task.

Models come from a bundle folder or from the registry's production versions. A bundle that
cannot load is skipped (logged once, retried once it is registered again) and the others
are served. A newer production version is swapped in: new requests go to its engine, and
requests in flight finish on the old one (`engine.retire()`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from omniforge_shared.bundle import Bundle, load_bundle
from omniforge_shared.metrics import Metrics

logger = logging.getLogger(__name__)


class ModelNotFound(LookupError):
    pass


class Engine(Protocol):
    backend_name: str

    def retire(self) -> None:
        """Finish what is in flight, then stop (a newer version took over)."""

    def stop(self) -> None: ...

    def gauges(self) -> dict[str, float]:
        """Point-in-time figures exported as omniforge_<component>_<name>{model, version}."""


@dataclass
class LoadedModel:
    bundle: Bundle
    engine: Engine

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def backend(self) -> str:
        return self.engine.backend_name


# (bundle, pool) -> engine; the pool gives access to the service's settings and registry
EngineFactory = Callable[[Bundle, "ModelPool"], Engine]


class ModelPool:
    def __init__(self, settings, *, task: str | tuple[str, ...], engine_factory: EngineFactory | dict[str, EngineFactory],
                 metrics: Metrics | None = None) -> None:
        """One task, or several (a service with one engine per task: `engine_factory` maps task -> factory)."""
        self.settings = settings
        self.tasks = (task,) if isinstance(task, str) else tuple(task)
        self.task = self.tasks[0]
        self.engine_factory = engine_factory
        self.defaults: dict[str, str] = {}            # task -> the model served when a call names none
        self.metrics = metrics or Metrics("service")
        self.models: dict[str, LoadedModel] = {}      # name -> the version served by default
        self.default: str | None = None
        self.registry = None                          # set when models come from the registry
        # "name:version" -> (the manifest checksum that failed, why): retried once re-registered
        self.unservable: dict[str, tuple[str, str]] = {}
        self._load_seconds = self.metrics.histogram("model_load_seconds", "time to load a model",
                                                    ["model", "version"])
        self._swaps = self.metrics.counter("model_swaps_total", "served versions replaced by newer ones", ["model"])
        self.metrics.registry.register(_EngineGauges(self))

    def load(self, bundle: Bundle) -> LoadedModel:
        if bundle.task not in self.tasks:
            raise ValueError(f"bundle {bundle.name}:{bundle.version} is a {bundle.task!r} model, "
                             f"not {' or '.join(map(repr, self.tasks))}")
        start = time.perf_counter()
        factory = self.engine_factory[bundle.task] if isinstance(self.engine_factory, dict) else self.engine_factory
        loaded = LoadedModel(bundle, factory(bundle, self))
        self._load_seconds.labels(bundle.name, bundle.version).observe(time.perf_counter() - start)
        old = self.models.get(bundle.name)
        swaps = self._swaps.labels(bundle.name)       # exported from the first load on, at 0 until a swap
        self.models[bundle.name] = loaded             # new requests go to the new engine from here
        self.default = self.default or bundle.name
        self.defaults.setdefault(bundle.task, bundle.name)
        if old is not None:
            old.engine.retire()                       # in-flight requests finish on the old one
            swaps.inc()
        logger.info("serving %s:%s with %s", bundle.name, bundle.version, loaded.backend)
        return loaded

    def load_configured(self) -> None:
        """Loads the bundle folder, or the registry's production versions."""
        s = self.settings
        if s.bundle is not None:
            self.load(load_bundle(Path(s.bundle)))
            return
        from omniforge_shared.artifacts import LocalArtifactStore
        from omniforge_shared.registry import Registry

        self.registry = Registry(s.database_url, LocalArtifactStore(s.artifact_root))
        self.registry.upgrade()
        self.refresh()
        if not self.models:
            logger.warning("no %s model is registered; run `omniforge bootstrap`", " or ".join(self.tasks))

    def refresh(self) -> list[str]:
        """Loads every model whose production version is not the one served; returns what changed."""
        if self.registry is None:
            return []
        names = self.settings.models or sorted({v.name for v in self.registry.list_versions() if v.task in self.tasks})
        changed = []
        for name in names:
            try:
                info = self.registry.get(name)
            except Exception as e:  # a model named in settings but not registered yet
                logger.warning("cannot serve %s: %s", name, e)
                continue
            current = self.models.get(name)
            if current is not None and current.version == info.version:
                continue
            ref = f"{name}:{info.version}"
            if self.unservable.get(ref, ("",))[0] == info.manifest_sha256:
                continue                          # failed as registered; retried once re-registered
            try:
                self.load(self.registry.bundle(name, info.version))
            except Exception as e:  # one bad bundle must not stop the others from being served
                self.unservable[ref] = (info.manifest_sha256, str(e))
                logger.error("cannot serve %s: %s", ref, e)
                continue
            self.unservable.pop(ref, None)
            changed.append(ref)
        return changed

    def get(self, name: str, version: str = "", *, task: str | None = None) -> LoadedModel:
        name = name or (self.defaults.get(task) if task else self.default) or ""
        loaded = self.models.get(name)
        if loaded is None or (task and loaded.bundle.task != task):
            known = ", ".join(sorted(n for n, m in self.models.items() if not task or m.bundle.task == task))
            what = f"{task} model" if task else "model"
            if not known:
                raise ModelNotFound(f"no {what} is served here: register one (`omniforge bootstrap` for the "
                                    "starters, or train one) and it is picked up within seconds")
            raise ModelNotFound(f"{what} {name!r} is not served here; available: {known}")
        if version and version != loaded.version:
            raise ModelNotFound(f"model {name!r} version {version!r} is not served; "
                                f"this service serves version {loaded.version!r}")
        return loaded

    def stop(self) -> None:
        for loaded in self.models.values():
            loaded.engine.stop()
        if self.registry is not None:
            self.registry.close()


class _EngineGauges:
    """Each served engine's gauges, read at scrape time."""

    def __init__(self, pool: ModelPool) -> None:
        self.pool = pool

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        families: dict[str, GaugeMetricFamily] = {}
        for loaded in list(self.pool.models.values()):
            for what, value in loaded.engine.gauges().items():
                family = families.get(what)
                if family is None:
                    family = families[what] = GaugeMetricFamily(self.pool.metrics.name(what), what.replace("_", " "),
                                                                 labels=["model", "version"])
                family.add_metric([loaded.name, loaded.version], value)
        yield from families.values()

    def describe(self):
        return []   # names depend on the engines loaded: collected, not declared
