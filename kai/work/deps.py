"""Route dependencies of the work part."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from kai.kit.wiring import dependency
from kai.work.commands import Commands
from kai.work.files import Files
from kai.work.streams import Streams
from kai.work.tasks import Tasks

CommandsDep = Annotated[Commands, Depends(dependency("commands", Commands))]
TasksDep = Annotated[Tasks, Depends(dependency("tasks", Tasks))]
StreamsDep = Annotated[Streams, Depends(dependency("streams", Streams))]
FilesDep = Annotated[Files, Depends(dependency("files", Files))]
