"""gRPC clients of the model services, one channel each, built once at start-up."""
from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from omniforge_proto.v1 import common_pb2, text_pb2_grpc

# reconnect quickly after a service restart, so the gateway recovers by itself
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 30000),
]


class ServiceClient:
    """A channel to one service, with its health check."""

    service_name: str = ""
    label: str = ""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    async def check(self, timeout: float) -> str:
        """'SERVING', 'NOT_SERVING' or 'UNAVAILABLE: ...'."""
        try:
            reply = await self.health.Check(health_pb2.HealthCheckRequest(service=self.service_name),
                                            timeout=timeout)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.aio.AioRpcError as e:
            return f"{e.code().name}: {e.details()}"

    async def close(self) -> None:
        await self.channel.close()


class TextClient(ServiceClient):
    service_name = "omniforge.v1.TextService"
    label = "text"

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.stub = text_pb2_grpc.TextServiceStub(self.channel)

    async def list_models(self, timeout: float) -> list[common_pb2.ModelInfo]:
        reply = await self.stub.ListModels(common_pb2.ListModelsRequest(), timeout=timeout)
        return list(reply.models)
