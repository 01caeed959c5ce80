"""The models a text service serves: one engine per (name, version)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omniforge_shared.backends import load_decoder
from omniforge_shared.bundle import Bundle, load_bundle
from omniforge_shared.tokenizer import load_tokenizer

from .engine import TextEngine
from .settings import TextServiceSettings

logger = logging.getLogger(__name__)
TASK = "text-generation"


class ModelNotFound(LookupError):
    pass


@dataclass
class LoadedModel:
    bundle: Bundle
    engine: TextEngine
    backend: str

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version


class ModelPool:
    def __init__(self, settings: TextServiceSettings) -> None:
        self.settings = settings
        self.models: dict[str, LoadedModel] = {}      # name -> the version served by default
        self.default: str | None = None
        self.registry = None                          # set when models come from the registry
        self.swaps = 0
        # "name:version" -> (the manifest checksum that failed, why): retried once re-registered
        self.unservable: dict[str, tuple[str, str]] = {}

    def load(self, bundle: Bundle) -> LoadedModel:
        if bundle.task != TASK:
            raise ValueError(f"bundle {bundle.name}:{bundle.version} is a {bundle.task!r} model, not {TASK!r}")
        s = self.settings
        base = None
        if s.adapters == "adapter" and "base_model" in bundle.manifest:
            if s.backend != "torch" or self.registry is None:
                raise ValueError("serving an adapter unmerged needs OMNIFORGE_TEXT_BACKEND=torch and the registry")
            ref = bundle.manifest["base_model"]
            base = self.registry.bundle(ref["name"], ref["version"])
        backend = load_decoder(bundle, backend=s.backend, threads=s.threads, int8=s.int8, triton_url=s.triton_url,
                               base_bundle=base)
        engine = TextEngine(backend, load_tokenizer(bundle.file("tokenizer")),
                            max_batch_size=s.max_batch_size, max_tokens_limit=s.max_tokens_limit)
        loaded = LoadedModel(bundle, engine, backend.name)
        old = self.models.get(bundle.name)
        self.models[bundle.name] = loaded             # new requests go to the new engine from here
        self.default = self.default or bundle.name
        if old is not None:
            old.engine.retire()                       # in-flight requests finish on the old one
            self.swaps += 1
        logger.info("serving %s:%s with %s", bundle.name, bundle.version, backend.name)
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
            logger.warning("no text-generation model is registered; run `omniforge bootstrap`")

    def refresh(self) -> list[str]:
        """Loads every model whose production version is not the one served; returns what changed."""
        if self.registry is None:
            return []
        names = self.settings.models or sorted({v.name for v in self.registry.list_versions() if v.task == TASK})
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

    def get(self, name: str, version: str = "") -> LoadedModel:
        name = name or self.default or ""
        loaded = self.models.get(name)
        if loaded is None:
            known = ", ".join(sorted(self.models)) or "none loaded"
            raise ModelNotFound(f"model {name!r} is not served here; available: {known}")
        if version and version != loaded.version:
            raise ModelNotFound(f"model {name!r} version {version!r} is not served; "
                                f"this service serves version {loaded.version!r}")
        return loaded

    def stop(self) -> None:
        for loaded in self.models.values():
            loaded.engine.stop()
        if self.registry is not None:
            self.registry.close()
