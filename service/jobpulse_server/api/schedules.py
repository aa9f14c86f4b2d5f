"""jobpulse.v1.ScheduleService: checks requests (a template as CreateJob checks it), calls the schedule
service with the caller, and builds the responses."""

from __future__ import annotations

from jobpulse.v1 import schedule_service_pb2, schedule_service_pb2_grpc
from jobpulse_server.api.interceptors import caller
from jobpulse_server.api.jobs import MAX_NAMED_PATHS, new_job
from jobpulse_server.api.messages import Ctx
from jobpulse_server.domain.clock import Clock
from jobpulse_server.domain.errors import InvalidArgument
from jobpulse_server.domain.retention import Retention
from jobpulse_server.services import auth
from jobpulse_server.services.jobs import NewJob
from jobpulse_server.services.schedules import JOB_FIELD, NewSchedule, ScheduleChanges, ScheduleService
from jobpulse_server.wire.convert import job_pb
from jobpulse_server.wire.schedules import UPDATABLE, check_schedule, schedule_id, schedule_pb
from jobpulse_server.wire.validation import Checker

DEFAULT_PAGE_SCHEDULES = 50
MAX_PAGE_SCHEDULES = 500


class ScheduleServicer(schedule_service_pb2_grpc.ScheduleServiceServicer):
    """jobpulse.v1.ScheduleService."""

    # As JobService: a schedule makes jobs for its owner.
    ROLES = auth.CLIENT_ROLES

    def __init__(self, schedules: ScheduleService, clock: Clock, retention: Retention | None = None) -> None:
        self.schedules = schedules
        self.clock = clock
        self.retention = retention

    def _template(self, given: schedule_service_pb2.Schedule, c: Checker) -> NewJob | None:
        """The schedule's template, checked as CreateJob checks a request (violations named
        ``schedule.job.<field>``); None when it is missing or bad."""
        if not given.HasField("job"):
            return None
        try:
            return new_job(given.job, self.clock())
        except InvalidArgument as exc:
            for v in exc.violations:
                c.fail(f"{JOB_FIELD}.{v.field}", v.description)
            return None

    async def CreateSchedule(
        self, request: schedule_service_pb2.CreateScheduleRequest, context: Ctx
    ) -> schedule_service_pb2.CreateScheduleResponse:
        c = Checker()
        given = request.schedule
        check_schedule(given, c, UPDATABLE)
        job = self._template(given, c)
        c.done()
        assert job is not None  # check_schedule requires it
        made = await self.schedules.create_schedule(
            caller(),
            NewSchedule(
                cron=given.cron,
                job=job,
                display_name=given.display_name,
                time_zone=given.time_zone,
                paused=given.paused,
                misfire_policy=given.misfire_policy,
                overlap_policy=given.overlap_policy,
            ),
        )
        return schedule_service_pb2.CreateScheduleResponse(schedule=schedule_pb(made))

    async def GetSchedule(
        self, request: schedule_service_pb2.GetScheduleRequest, context: Ctx
    ) -> schedule_service_pb2.GetScheduleResponse:
        c = Checker()
        found_id = schedule_id(request.name, "name", c)
        c.done()
        found = await self.schedules.get_schedule(caller(), found_id)
        return schedule_service_pb2.GetScheduleResponse(schedule=schedule_pb(found))

    async def ListSchedules(
        self, request: schedule_service_pb2.ListSchedulesRequest, context: Ctx
    ) -> schedule_service_pb2.ListSchedulesResponse:
        c = Checker()
        c.check(request.page_size >= 0, "page_size", f"must not be negative (got {request.page_size})")
        c.done()
        page_size = min(request.page_size or DEFAULT_PAGE_SCHEDULES, MAX_PAGE_SCHEDULES)
        found, token = await self.schedules.list_schedules(caller(), page_size, request.page_token)
        return schedule_service_pb2.ListSchedulesResponse(
            schedules=[schedule_pb(s) for s in found], next_page_token=token
        )

    async def UpdateSchedule(
        self, request: schedule_service_pb2.UpdateScheduleRequest, context: Ctx
    ) -> schedule_service_pb2.UpdateScheduleResponse:
        c = Checker()
        given = request.schedule
        found_id = schedule_id(given.name, "schedule.name", c)
        paths = set(request.update_mask.paths)
        for p in sorted(paths - set(UPDATABLE))[:MAX_NAMED_PATHS]:
            c.fail("update_mask", f"unknown path {p[:80]!r}; allowed: {', '.join(UPDATABLE)}")
        if not paths:
            # AIP-134: no mask, every field set to other than its default.
            set_fields = {
                "display_name": bool(given.display_name),
                "cron": bool(given.cron),
                "time_zone": bool(given.time_zone),
                "job": given.HasField("job"),
                "paused": given.paused,
                "misfire_policy": bool(given.misfire_policy),
                "overlap_policy": bool(given.overlap_policy),
            }
            paths = {name for name, is_set in set_fields.items() if is_set}
            c.check(
                bool(paths),
                "update_mask",
                "nothing to update: set a field, or name it in update_mask to set it back to its default "
                f"({', '.join(UPDATABLE)})",
            )
        paths &= set(UPDATABLE)
        check_schedule(given, c, paths)
        job = self._template(given, c) if "job" in paths else None
        c.done()
        changes = ScheduleChanges(
            display_name=given.display_name if "display_name" in paths else None,
            cron=given.cron if "cron" in paths else None,
            time_zone=given.time_zone if "time_zone" in paths else None,
            job=job,
            paused=given.paused if "paused" in paths else None,
            misfire_policy=given.misfire_policy if "misfire_policy" in paths else None,
            overlap_policy=given.overlap_policy if "overlap_policy" in paths else None,
        )
        updated = await self.schedules.update_schedule(caller(), found_id, changes)
        return schedule_service_pb2.UpdateScheduleResponse(schedule=schedule_pb(updated))

    async def DeleteSchedule(
        self, request: schedule_service_pb2.DeleteScheduleRequest, context: Ctx
    ) -> schedule_service_pb2.DeleteScheduleResponse:
        c = Checker()
        found_id = schedule_id(request.name, "name", c)
        c.done()
        await self.schedules.delete_schedule(caller(), found_id)
        return schedule_service_pb2.DeleteScheduleResponse()

    async def TriggerSchedule(
        self, request: schedule_service_pb2.TriggerScheduleRequest, context: Ctx
    ) -> schedule_service_pb2.TriggerScheduleResponse:
        c = Checker()
        found_id = schedule_id(request.name, "name", c)
        c.done()
        page, schedule = await self.schedules.trigger_schedule(caller(), found_id)
        job = job_pb(
            page.job, self.clock(), page.chunks, page.chunks_next_page_token, retention=self.retention
        )
        return schedule_service_pb2.TriggerScheduleResponse(job=job, schedule=schedule_pb(schedule))
