"""Uploads to agents and downloads, by the owner or by the agent the file is for."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kai.agents import store
from kai.agents.deps import RegistryDep
from kai.agents.routes import viewer
from kai.agents.service import TOKEN_PREFIX
from kai.auth.deps import (
    AuditDep,
    DbSession,
    IdentityDep,
    Require,
    authorize,
    client_ip,
    current_principal,
)
from kai.auth.service import Principal
from kai.auth.tokens import digest
from kai.core import DatabaseDep, SettingsDep
from kai.errors import NotFound, Unauthorized
from kai.kit.openapi import errors
from kai.kit.params import Offset
from kai.kit.schemas import page_fields
from kai.middleware import STREAMED_BODY
from kai.work.deps import FilesDep
from kai.work.files import FILE_NOT_FOUND, Upload, content_disposition
from kai.work.models import StoredFile
from kai.work.schemas import FileDeleted, FileList, FileOut, FileUploaded

router = APIRouter(tags=["files"])

Uploader = Annotated[Principal, Require("files:upload")]
Reader = Annotated[Principal, Require("agents:read")]
MAX_FILE_PAGE = 500

UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "metadata": {
                        "type": "string",
                        "description": "A JSON object, kept with the file and given to the agent",
                        "example": '{"purpose": "summarize"}',
                    },
                },
            }
        }
    },
}


def file_out(stored: StoredFile) -> dict[str, Any]:
    return {
        "file_id": stored.id,
        "agent_id": stored.agent_id,
        "filename": stored.filename,
        "content_type": stored.content_type,
        "size": stored.size,
        "sha256": stored.sha256,
        "metadata": stored.metadata_,
        "uploaded_at": stored.created_at,
    }


@router.post(
    "/api/agents/{agentId}/upload",
    status_code=status.HTTP_201_CREATED,
    openapi_extra={"requestBody": UPLOAD_BODY, STREAMED_BODY: True},
    responses=errors(401, 403, 404, 413, 415, 422),
)
async def upload(
    agentId: str, request: Request, principal: Uploader, files: FilesDep
) -> FileUploaded:
    """Upload a file for the agent (multipart: ``file``, and ``metadata`` as a JSON object).
    It is streamed to storage and hashed; ``upload_progress`` events follow it on the agent's
    WebSocket, and an agent that declared ``files`` is told where to fetch it."""
    length = request.headers.get("content-length")
    stored = await files.receive(
        Upload(
            viewer=viewer(principal),
            agent_id=agentId,
            content_type=request.headers.get("content-type", ""),
            content_length=int(length) if length and length.isdigit() else None,
            body=request.stream(),
        )
    )
    return FileUploaded(**file_out(stored))


@router.get("/api/agents/{agentId}/files", responses=errors(401, 403, 404, 422))
async def list_files(
    agentId: str,
    principal: Reader,
    registry: RegistryDep,
    files: FilesDep,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=MAX_FILE_PAGE)] = 50,
    offset: Offset = 0,
) -> FileList:
    """The files uploaded for the agent, newest first."""
    await registry.visible(session, viewer(principal), agentId)
    rows, total = await files.listed(session, agentId, limit=limit, offset=offset)
    return FileList(
        files=[FileOut(**file_out(row)) for row in rows],
        **page_fields(total=total, offset=offset, count=len(rows)),
    )


_bearer = HTTPBearer(auto_error=False, description="A user's access token or the agent's token")


async def _stored_for_caller(
    fileId: str,
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    identity: IdentityDep,
    audit: AuditDep,
    files: FilesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> StoredFile:
    """The file, for the agent it was uploaded to (its token) or a user who may see that agent."""
    token = credentials.credentials if credentials is not None else ""
    async with db.session(write=False) as session:
        if token.startswith(TOKEN_PREFIX):
            agent = await store.by_token_hash(session, digest(token))
            if agent is None:
                raise Unauthorized("Invalid agent token")
            stored = await session.get(StoredFile, fileId)
            if stored is None or stored.agent_id != agent.id:
                raise NotFound(FILE_NOT_FOUND)
            return stored
    principal = await current_principal(request, db, identity, credentials)
    authorize(request, audit, principal, "agents:read", client_ip=client_ip(request, settings))
    async with db.session(write=False) as session:
        return await files.visible(session, viewer(principal), fileId)


@router.get(
    "/api/files/{fileId}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file's bytes, as an attachment",
            "content": {"application/octet-stream": {}},
        },
        **errors(401, 403, 404),
    },
)
async def download(
    stored: Annotated[StoredFile, Depends(_stored_for_caller)], files: FilesDep
) -> FileResponse:
    """Download a file: with the token of the agent it was uploaded to, or as a user who may
    see that agent. It is always sent as ``application/octet-stream``, as an attachment."""
    return FileResponse(
        files.storage.path(stored.storage_name),
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": content_disposition(stored.filename),
            "X-Content-Type-Options": "nosniff",
            "Digest": f"sha-256={base64.b64encode(bytes.fromhex(stored.sha256)).decode()}",
            "Cache-Control": "private, no-store",
        },
    )


@router.delete("/api/files/{fileId}", responses=errors(401, 403, 404))
async def delete_file(
    fileId: str, principal: Uploader, files: FilesDep, session: DbSession
) -> FileDeleted:
    """Delete a file, giving its room back to the quota."""
    stored = await files.visible(session, viewer(principal), fileId)
    await files.delete(session, stored)
    return FileDeleted(file_id=fileId)
