"""The model and dataset registry: SQLAlchemy tables, Alembic migrations, and `Registry`."""
from .db import Base, DatasetVersion, Model, ModelVersion
from .registry import STAGES, Registry, RegistryError

__all__ = ["Base", "DatasetVersion", "Model", "ModelVersion", "Registry", "RegistryError", "STAGES"]
