"""`Registry`: versioned models and datasets in a SQL database, their files in an artifact store.

SQLite by default (`sqlite:///$OMNIFORGE_HOME/registry.db`), PostgreSQL for shared set-ups
(`postgresql+psycopg://...`). The schema is created and upgraded by Alembic.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from omniforge_shared.artifacts import ArtifactStore
from omniforge_shared.bundle import MANIFEST, Bundle, load_bundle

from .db import DatasetVersion, Model, ModelVersion

STAGES = ("staging", "production", "archived")
MIGRATIONS = Path(__file__).parent / "migrations"


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    task: str
    stage: str
    artifact_key: str
    manifest_sha256: str
    metrics: dict
    created_at: datetime

    @classmethod
    def of(cls, mv: ModelVersion) -> "VersionInfo":
        return cls(mv.model.name, mv.version, mv.model.task, mv.stage, mv.artifact_key,
                   mv.manifest_sha256, dict(mv.metrics or {}), mv.created_at)


class Registry:
    def __init__(self, url: str, store: ArtifactStore) -> None:
        self.url = url
        self.store = store
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url, future=True)
        if url.startswith("sqlite"):
            @event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _):  # concurrent readers while a writer works
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=5000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.on_stage_change: list = []     # callbacks (name, version, stage) after a stage changes

    def upgrade(self) -> None:
        """Creates or migrates the schema to the newest Alembic revision."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def close(self) -> None:
        self.engine.dispose()

    # ---- models ----------------------------------------------------------------------------

    def register_bundle(self, bundle_dir: Path, *, stage: str = "staging") -> VersionInfo:
        """Copies a verified bundle into the store and records it. Idempotent: registering the
        same name, version and manifest again returns the existing row; a different bundle
        under a taken version is refused."""
        if stage not in STAGES:
            raise RegistryError(f"stage={stage!r}; use one of {STAGES}")
        bundle = load_bundle(bundle_dir)
        digest = hashlib.sha256((bundle.path / MANIFEST).read_bytes()).hexdigest()
        existing = self._find(bundle.name, bundle.version)
        if existing is not None:
            if existing.manifest_sha256 != digest:
                raise RegistryError(f"{bundle.name}:{bundle.version} is already registered with another "
                                    "manifest; register under a new version")
            return existing
        key = f"models/{bundle.name}/{bundle.version}"
        self.store.put_dir(bundle.path, key)
        try:
            with self.sessions.begin() as s:
                model = s.scalar(select(Model).where(Model.name == bundle.name))
                if model is None:
                    model = Model(name=bundle.name, task=bundle.task)
                    s.add(model)
                    s.flush()
                mv = ModelVersion(model_id=model.id, version=bundle.version, stage="staging",
                                  artifact_key=key, manifest_sha256=digest,
                                  metrics=bundle.manifest.get("metrics", {}))
                s.add(mv)
        except IntegrityError:
            # a concurrent registration of the same version won the race
            existing = self._find(bundle.name, bundle.version)
            if existing is not None and existing.manifest_sha256 == digest:
                return existing
            raise
        if stage != "staging":
            return self.set_stage(bundle.name, bundle.version, stage)
        return self._find(bundle.name, bundle.version)

    def set_stage(self, name: str, version: str, stage: str) -> VersionInfo:
        """Moves a version to a stage; promoting to production archives the previous one."""
        if stage not in STAGES:
            raise RegistryError(f"stage={stage!r}; use one of {STAGES}")
        with self.sessions.begin() as s:
            mv = self._get(s, name, version)
            if stage == "production":
                for other in mv.model.versions:
                    if other.stage == "production" and other.id != mv.id:
                        other.stage = "archived"
            mv.stage = stage
        for callback in self.on_stage_change:
            try:
                callback(name, version, stage)
            except Exception:  # a notification failing must not undo the change; pollers catch up
                logging.getLogger(__name__).exception("stage-change notification failed")
        return self._find(name, version)

    def delete_version(self, name: str, version: str) -> None:
        """Removes a version's row and its files (e.g. to re-register a rebuilt starter)."""
        with self.sessions.begin() as s:
            mv = self._get(s, name, version)
            key = mv.artifact_key
            s.delete(mv)
        self.store.delete(key)

    def get(self, name: str, version: str | None = None) -> VersionInfo:
        """A version by number, or the production one (else the newest) when version is None."""
        with self.sessions() as s:
            if version:
                return VersionInfo.of(self._get(s, name, version))
            model = s.scalar(select(Model).where(Model.name == name))
            if model is None or not model.versions:
                raise RegistryError(f"no model named {name!r}; registered: {self.model_names()}")
            prod = [v for v in model.versions if v.stage == "production"]
            return VersionInfo.of(prod[-1] if prod else model.versions[-1])

    def bundle(self, name: str, version: str | None = None) -> Bundle:
        info = self.get(name, version)
        return load_bundle(self.store.local_path(info.artifact_key))

    def list_versions(self, name: str | None = None) -> list[VersionInfo]:
        with self.sessions() as s:
            q = select(ModelVersion).join(Model).order_by(Model.name, ModelVersion.id)
            if name:
                q = q.where(Model.name == name)
            return [VersionInfo.of(mv) for mv in s.scalars(q)]

    def model_names(self) -> list[str]:
        with self.sessions() as s:
            return list(s.scalars(select(Model.name).order_by(Model.name)))

    def next_version(self, name: str) -> str:
        numeric = [int(v.version) for v in self.list_versions(name) if v.version.isdigit()]
        return str(max(numeric, default=0) + 1)

    def _find(self, name: str, version: str) -> VersionInfo | None:
        with self.sessions() as s:
            mv = s.scalar(select(ModelVersion).join(Model)
                          .where(Model.name == name, ModelVersion.version == version))
            return VersionInfo.of(mv) if mv else None

    @staticmethod
    def _get(s: Session, name: str, version: str) -> ModelVersion:
        mv = s.scalar(select(ModelVersion).join(Model).where(Model.name == name, ModelVersion.version == version))
        if mv is None:
            raise RegistryError(f"no version {version!r} of model {name!r}")
        return mv

    # ---- datasets --------------------------------------------------------------------------

    def register_dataset(self, dataset_dir: Path, *, name: str, version: str | None = None) -> DatasetVersion:
        import json

        manifest = json.loads((Path(dataset_dir) / "dataset.json").read_text())
        with self.sessions() as s:
            same = s.scalar(select(DatasetVersion).where(DatasetVersion.name == name,
                                                         DatasetVersion.content_hash == manifest["content_hash"]))
            if same is not None:
                return same
            taken = [d.version for d in s.scalars(select(DatasetVersion).where(DatasetVersion.name == name))]
        version = version or str(max((int(v) for v in taken if v.isdigit()), default=0) + 1)
        key = f"datasets/{name}/{version}"
        self.store.put_dir(Path(dataset_dir), key)
        with self.sessions.begin() as s:
            row = DatasetVersion(name=name, version=version, format=manifest["format"],
                                 counts=manifest["counts"], content_hash=manifest["content_hash"],
                                 artifact_key=key)
            s.add(row)
        return row

    def list_datasets(self) -> list[DatasetVersion]:
        with self.sessions() as s:
            return list(s.scalars(select(DatasetVersion).order_by(DatasetVersion.name, DatasetVersion.id)))

    def dataset_path(self, name: str, version: str | None = None) -> Path:
        with self.sessions() as s:
            q = select(DatasetVersion).where(DatasetVersion.name == name).order_by(DatasetVersion.id.desc())
            if version:
                q = q.where(DatasetVersion.version == version)
            row = s.scalar(q)
        if row is None:
            raise RegistryError(f"no dataset {name!r}" + (f" version {version!r}" if version else ""))
        return self.store.local_path(row.artifact_key)
