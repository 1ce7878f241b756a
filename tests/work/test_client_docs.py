"""docs/client.md's example, as it stands, run against a hub hosting the demo agent."""

from __future__ import annotations

import asyncio
import re
import sys

from tests.agents.conftest import ServerStarter
from tests.agents.processes import REPO_ROOT, child_env
from tests.agents.support import eventually
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD

DOC = REPO_ROOT / "docs" / "client.md"


async def test_the_client_example_runs(start_server: ServerStarter) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    (example,) = [b for b in blocks if b.startswith("# client_example.py\n")]
    async with start_server(demo=True) as server:
        env = child_env(KAI_URL=server.base_url, KAI_EMAIL=ADMIN_EMAIL, KAI_PASSWORD=ADMIN_PASSWORD)

        # The demo agent must be online before the example looks for it.
        async def demo_online() -> bool:
            return any(live.ready for live in server.hub.live.all())

        await eventually(demo_online, 20, what="the demo agent online")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            example,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode()
    assert process.returncode == 0, err.decode()
    assert "command: {'text': 'hello'}" in text
    assert "task: succeeded {'counted': 3}" in text
    assert "stream: You asked: What is kai?. This is the demo agent answering." in text
    assert "event: succeeded 1.0" in text
