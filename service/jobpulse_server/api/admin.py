"""jobpulse.v1.AdminService: the server's health report and per-key usage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from jobpulse.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
)
from jobpulse_server.api.interceptors import caller
from jobpulse_server.api.messages import (
    Ctx,
)
from jobpulse_server.services import auth
from jobpulse_server.services.usage import UsageLedger

T = TypeVar("T")
R = TypeVar("R")


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    """jobpulse.v1.AdminService."""

    ROLES = auth.ADMIN_ROLES
    # GetUsage: any key, for its own usage (an admin key: every key's).
    USAGE_ROLES = auth.CLIENT_ROLES | auth.WORKER_ROLES

    def __init__(
        self,
        usage: UsageLedger,
        report: Callable[[], Awaitable[admin_service_pb2.GetServerHealthResponse]],
    ) -> None:
        self.usage = usage
        self.report = report  # builds the GetServerHealth answer

    async def GetServerHealth(
        self, request: admin_service_pb2.GetServerHealthRequest, context: Ctx
    ) -> admin_service_pb2.GetServerHealthResponse:
        return await self.report()

    async def GetUsage(
        self, request: admin_service_pb2.GetUsageRequest, context: Ctx
    ) -> admin_service_pb2.GetUsageResponse:
        usage = await self.usage.report()
        who = caller()
        if not who.sees_all:  # a client or worker key sees its own line only, never another key's
            usage = {name: u for name, u in usage.items() if name == who.name}
        return admin_service_pb2.GetUsageResponse(
            usage=[
                admin_service_pb2.KeyUsage(key_name=name, role=u.role, calls=u.calls, rejected=u.rejected)
                for name, u in sorted(usage.items())
            ]
        )
