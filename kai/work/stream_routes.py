"""Prompt streams: open one on an agent, read it as Server-Sent Events, cancel it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from kai.agents.routes import viewer
from kai.auth.deps import DbSession, Require
from kai.auth.service import Principal
from kai.core import DatabaseDep, SettingsDep
from kai.kit.openapi import errors
from kai.protocol.bounds import MAX_INT
from kai.work.deps import StreamsDep
from kai.work.schemas import StreamCancelled, StreamInfo, StreamOpened, StreamRequest

router = APIRouter(tags=["work"])

Commander = Annotated[Principal, Require("agents:command")]
Reader = Annotated[Principal, Require("agents:read")]

SSE_EXAMPLE = (
    'id: 0\nevent: chunk\ndata: {"streamId":"…","index":0,"chunk":"Hello"}\n\n'
    'event: end\ndata: {"streamId":"…","status":"completed","chunks":1}\n\n'
)


@router.post("/api/agents/{agentId}/stream-prompt", responses=errors(400, 401, 403, 404, 409, 422))
async def stream_prompt(
    agentId: str,
    body: StreamRequest,
    principal: Commander,
    settings: SettingsDep,
    streams: StreamsDep,
    request: Request,
) -> StreamOpened:
    """Hand a prompt to the agent's stream handler. Its answer arrives as ``stream_chunk``
    events on the agent's WebSocket and as Server-Sent Events at ``streamUrl``."""
    stream = await streams.open(
        viewer(principal),
        agentId,
        prompt=body.prompt,
        context=body.context,
        options=body.options,
    )
    path = request.app.url_path_for("stream_events", streamId=stream.id)
    base = settings.public_base_url or str(request.base_url)
    return StreamOpened(
        stream_id=stream.id,
        stream_url=base.rstrip("/") + path,
        expires_at=stream.expires_at,
        status=stream.status,
    )


@router.get("/api/streams/{streamId}", responses=errors(401, 403, 404, 410))
async def stream_info(
    streamId: str, principal: Reader, streams: StreamsDep, session: DbSession
) -> StreamInfo:
    """How a stream stands: its status and how many chunks it has."""
    stream = await streams.visible(session, viewer(principal), streamId)
    return StreamInfo(
        stream_id=stream.id,
        agent_id=stream.agent_id,
        status=stream.status,
        chunks=stream.chunks,
        error=stream.error,
        created_at=stream.created_at,
        completed_at=stream.completed_at,
        expires_at=stream.expires_at,
    )


@router.get(
    "/api/streams/{streamId}/events",
    name="stream_events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The stream as Server-Sent Events: `chunk` events (their `id` is the"
            " chunk's index) and one `end` event",
            "content": {"text/event-stream": {"example": SSE_EXAMPLE}},
        },
        **errors(401, 403, 404, 410, 422),
    },
)
async def stream_events(
    streamId: str,
    principal: Reader,
    db: DatabaseDep,
    streams: StreamsDep,
    last_event_id: Annotated[
        int | None,
        Header(alias="Last-Event-ID", ge=-1, le=MAX_INT, description="Resume after this chunk"),
    ] = None,
    start: Annotated[
        int | None, Query(alias="from", ge=0, le=MAX_INT, description="First chunk")
    ] = None,
) -> StreamingResponse:
    """The answer as Server-Sent Events, from the first chunk (or after ``Last-Event-ID``),
    live while it is written and in full afterwards, until the stream expires."""
    async with db.session(write=False) as session:
        stream = await streams.visible(session, viewer(principal), streamId)
    first = last_event_id + 1 if last_event_id is not None else (start or 0)
    return StreamingResponse(
        streams.follow(stream, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/api/streams/{streamId}/cancel", responses=errors(401, 403, 404, 409, 410))
async def cancel_stream(
    streamId: str, principal: Commander, streams: StreamsDep
) -> StreamCancelled:
    """Stop a stream: it ends ``cancelled`` and the agent's generator is stopped."""
    stream, previous = await streams.cancel(viewer(principal), streamId)
    return StreamCancelled(
        stream_id=stream.id,
        status=stream.status,
        previous_status=previous,
    )
