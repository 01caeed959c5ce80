"""gRPC clients of the model services: one per configured service, one channel each, built
once at start-up. Every client has the service's health check and its model list; the
typed stub of a service's own methods sits on its subclass."""
from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from omniforge_proto.v1 import audio_pb2_grpc, common_pb2, fusion_pb2_grpc, image_pb2_grpc, text_pb2_grpc
from omniforge_shared.logs import request_id
from omniforge_shared.serving import REQUEST_ID_KEY

from .errors import ApiError, from_grpc

# reconnect quickly after a service restart, so the gateway recovers by itself
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 30000),
    # uploads (images, audio) go to the services in one message; the gateway caps their size first
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


class ServiceClient:
    """A channel to one service, with its health check and model list."""

    service_name: str = ""
    label: str = ""

    def __init__(self, address: str, *, retry_after_s: int = 2, credentials: grpc.ChannelCredentials | None = None) -> None:
        """`credentials`: TLS (and a client certificate for mutual TLS) when the services use it."""
        self.address = address
        self.retry_after_s = retry_after_s
        self.channel = (grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS) if credentials
                        else grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS))
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self._list_models = self.channel.unary_unary(
            f"/{self.service_name}/ListModels", request_serializer=common_pb2.ListModelsRequest.SerializeToString,
            response_deserializer=common_pb2.ListModelsResponse.FromString)

    @staticmethod
    def metadata() -> tuple[tuple[str, str], ...]:
        """gRPC metadata of the current request: its id, so the service logs with it."""
        return ((REQUEST_ID_KEY, request_id.get()),)

    def error(self, err: grpc.aio.AioRpcError) -> ApiError:
        return from_grpc(err, service=self.label, retry_after_s=self.retry_after_s)

    async def check(self, timeout: float) -> str:
        """'SERVING', 'NOT_SERVING' or 'UNAVAILABLE: ...'."""
        try:
            reply = await self.health.Check(health_pb2.HealthCheckRequest(service=self.service_name),
                                            timeout=timeout)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.aio.AioRpcError as e:
            return f"{e.code().name}: {e.details()}"

    async def list_models(self, timeout: float) -> list[common_pb2.ModelInfo]:
        try:
            reply = await self._list_models(common_pb2.ListModelsRequest(), timeout=timeout, metadata=self.metadata())
        except grpc.aio.AioRpcError as e:
            raise self.error(e) from None
        return list(reply.models)

    async def close(self) -> None:
        await self.channel.close()


class TextClient(ServiceClient):
    service_name = "omniforge.v1.TextService"
    label = "text"

    def __init__(self, address: str, **kwargs) -> None:
        super().__init__(address, **kwargs)
        self.stub = text_pb2_grpc.TextServiceStub(self.channel)


class ImageClient(ServiceClient):
    service_name = "omniforge.v1.ImageService"
    label = "image"

    def __init__(self, address: str, **kwargs) -> None:
        super().__init__(address, **kwargs)
        self.stub = image_pb2_grpc.ImageServiceStub(self.channel)


class AudioClient(ServiceClient):
    service_name = "omniforge.v1.AudioService"
    label = "audio"

    def __init__(self, address: str, **kwargs) -> None:
        super().__init__(address, **kwargs)
        self.stub = audio_pb2_grpc.AudioServiceStub(self.channel)


class FusionClient(ServiceClient):
    service_name = "omniforge.v1.FusionService"
    label = "fusion"

    def __init__(self, address: str, **kwargs) -> None:
        super().__init__(address, **kwargs)
        self.stub = fusion_pb2_grpc.FusionServiceStub(self.channel)


CLIENTS: dict[str, type[ServiceClient]] = {c.label: c for c in (TextClient, ImageClient, AudioClient, FusionClient)}


def not_configured(label: str) -> ApiError:
    return ApiError(503, "service_not_configured",
                    f"the {label} service is not configured on this gateway; set OMNIFORGE_GATEWAY_"
                    f"{label.upper()}_ADDRESS to its gRPC address (host:port) and restart the gateway")
