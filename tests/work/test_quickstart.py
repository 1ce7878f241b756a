"""docs/quickstart.md, as it stands: its shell blocks run in order in one bash session against a
hub hosting the demo agent (the page's 127.0.0.1:8000 pointed at the test's hub)."""

from __future__ import annotations

import asyncio
import re

from tests.agents.conftest import ServerStarter
from tests.agents.processes import REPO_ROOT, child_env
from tests.agents.support import eventually
from tests.helpers import ADMIN_PASSWORD

PAGE = REPO_ROOT / "docs" / "quickstart.md"


async def test_the_quickstart_runs(start_server: ServerStarter) -> None:
    blocks = re.findall(r"```sh\n(.*?)```", PAGE.read_text(), re.DOTALL)
    assert blocks[0].strip() == "make run"  # the hub the test starts instead
    script = "set -euo pipefail\n" + "\n".join(blocks[1:])
    # The stream URL is built from the request, as on a hub without KAI_PUBLIC_BASE_URL.
    async with start_server(demo=True, public_base_url=None) as server:

        async def demo_online() -> bool:
            return any(live.ready for live in server.hub.live.all())

        await eventually(demo_online, 20, what="the demo agent online")
        script = script.replace("http://127.0.0.1:8000", server.base_url)
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            script,
            cwd=REPO_ROOT,
            env=child_env(PASSWORD=ADMIN_PASSWORD),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 90)
    text = out.decode()
    assert process.returncode == 0, err.decode() + text
    assert '"result":{"hello":"world"}' in text
    sse = [line for line in text.splitlines() if line.startswith("data: ")]
    chunks = [re.findall(r'"chunk":"([^"]*)"', line)[0] for line in sse if '"chunk"' in line]
    assert "".join(chunks) == "You asked: What can you do?. This is the demo agent answering."
    assert "event: end" in text
    assert '"status":"succeeded"' in text
    assert '"result":{"counted":3}' in text
    assert '"previousStatus":"online"' in text
    assert text.count('"seq":') >= 5
    assert '"agentToken":"kai_agent_' in text
