"""One runtime for every model service: a service is a servicer, an engine factory and a
settings class; this package does the rest (gRPC server, health, reflection, signals,
deadlines, the model pool and its hot swaps, request ids, Prometheus)."""
from .interceptor import REQUEST_ID_KEY, label_call
from .pool import Engine, LoadedModel, ModelNotFound, ModelPool
from .server import list_models_reply, serve
from .settings import ServiceSettings

__all__ = ["REQUEST_ID_KEY", "Engine", "LoadedModel", "ModelNotFound", "ModelPool", "ServiceSettings",
           "label_call", "list_models_reply", "serve"]
