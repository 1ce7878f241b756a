"""Route dependencies of the ops part."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from kai.kit.wiring import dependency
from kai.ops.runtime import RuntimeConfig

RuntimeDep = Annotated[RuntimeConfig, Depends(dependency("runtime", RuntimeConfig))]
