"""How a task is told on the sockets: one view, which the ``task_update`` event and the peer
replies (``peer_task_*``) both start from. REST answers use the fuller ``schemas.TaskStatus``."""

from __future__ import annotations

from typing import Any

from kai.protocol.states import TaskStatus
from kai.work.models import Task


def task_state(task: Task) -> dict[str, Any]:
    """Where the task stands: its status and progress, its message, and its result or error
    once it has one."""
    state: dict[str, Any] = {
        "taskId": task.id,
        "taskType": task.task_type,
        "status": task.status,
        "progress": task.progress,
        "attempt": task.attempts,
    }
    if task.message is not None:
        state["message"] = task.message
    if task.status == TaskStatus.SUCCEEDED:
        state["result"] = task.result
    elif task.status == TaskStatus.FAILED:
        state["error"] = task.error
    return state


def task_event(task: Task) -> dict[str, Any]:
    """The ``task_update`` event of the task's agent log (and of its source agent)."""
    event = {"type": "task_update", **task_state(task)}
    if task.parent_id is not None:
        event["parentTaskId"] = task.parent_id
    return event
