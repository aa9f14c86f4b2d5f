"""Kinds of work and their controls on the claim: ListKinds, UpdateKind, and the dashboard's Kinds page.

A kind's controls (``paused``, ``max_running_chunks``) hold for every job of the kind, whoever owns it, so
only an admin may set them; any caller may list the kinds. The claims read the controls in their own
transaction (store ``kind_controls`` and the kinds' running chunks, the rule ``Kind.claimable``); this
module only stores them and wakes waiting claims.
"""

from __future__ import annotations

from jobpulse_server.domain.clock import Clock, now_us
from jobpulse_server.domain.errors import FieldViolation, InvalidArgument, PermissionDenied
from jobpulse_server.domain.model import MAX_RUNNING_CHUNKS, Kind
from jobpulse_server.domain.principal import Principal
from jobpulse_server.services import auth, pagination
from jobpulse_server.store import Store, Tx

# ListKinds takes no filters: every token is issued for the same (empty) set.
_FILTERS = pagination.fingerprint({})


class KindService:
    """The kinds use cases, over the store's units of work."""

    def __init__(self, store: Store, clock: Clock = now_us) -> None:
        self.store = store
        self.clock = clock

    async def list_kinds(self, who: Principal, page_size: int, page_token: str) -> tuple[list[Kind], str]:
        """One page of kinds in kind order and the token of the next ('' after the last): every kind
        with stored controls and every kind with chunks PENDING or PROCESSING, with those counts (of
        the caller's own jobs for a key that sees only its own)."""
        after = pagination.decode_text(page_token, "kinds", _FILTERS, 128)
        async with self.store.read() as tx:
            found = await tx.list_kinds(after, page_size + 1, who.owner_filter)
        token = ""
        if len(found) > page_size:
            found = found[:page_size]
            token = pagination.encode("kinds", _FILTERS, [found[-1].kind])
        return found, token

    async def update_kind(
        self,
        who: Principal,
        kind: str,
        *,
        paused: bool | None = None,
        max_running_chunks: int | None = None,
    ) -> Kind:
        """UpdateKind: sets the controls given (None: unchanged) of ``kind``, which need not have any
        chunks yet (a pause ahead of time); the kind after it, with its counts now. Admin only, here
        as at the edges, so the dashboard's buttons and the RPC allow the same callers. Waiting claims
        are woken (on every replica): a resume or a higher cap may let them take work."""
        if who.role not in auth.ADMIN_ROLES:
            raise PermissionDenied(
                f"a {who.role} key may not change a kind's controls; it needs one of: "
                f"{', '.join(sorted(auth.ADMIN_ROLES))}",
                role=who.role,
            )
        problems = []
        if not kind:
            problems.append(FieldViolation("kind.kind", "is required"))
        if max_running_chunks is not None and not 0 <= max_running_chunks <= MAX_RUNNING_CHUNKS:
            problems.append(
                FieldViolation(
                    "kind.max_running_chunks",
                    f"must be between 0 (no limit) and {MAX_RUNNING_CHUNKS} (got {max_running_chunks})",
                )
            )
        if problems:
            raise InvalidArgument(problems)

        async def body(tx: Tx) -> Kind:
            stored = await tx.update_kind(
                kind, paused=paused, max_running_chunks=max_running_chunks, now=self.clock()
            )
            stored.pending_chunks, stored.running_chunks = await tx.kind_chunks(kind, who.owner_filter)
            tx.changes.new_work = True
            return stored

        return await self.store.write(body)
