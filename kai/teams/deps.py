"""Route dependencies of the teams part."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from kai.kit.wiring import dependency
from kai.teams.peers import Peers
from kai.teams.service import Teams

TeamsDep = Annotated[Teams, Depends(dependency("teams", Teams))]
PeersDep = Annotated[Peers, Depends(dependency("peers", Peers))]
