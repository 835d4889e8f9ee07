"""Where one `swarmgate render` process spends its CPU time, stage by stage (run by offline_render.py).

    python bench/offline_stages.py CONFIG STATE

Runs `swarmgate render` in this process exactly as the CLI does (`cmd_render`), with timers around
the functions it calls, and prints one JSON object of CPU seconds: `start` (the interpreter until
this script runs), `imports` (the offline command's modules), `read` (the state file's bytes),
`json` (`json.loads`), `snapshot` (Engine JSON → ObservedState), `route_table`, `render` (the config
and the bootstrap config), `decide_rest` (the rest of `decide_pass`: proxy spec, plan, ACME) and
`rest` (the output, dropping the pass's objects). The parent adds what the process spent after it
printed (interpreter exit) from its own `wait4`. Like `python -m swarmgate render`, it runs with the
cyclic collector off and ends through `cli.main.end_process` (ENDS_WITHOUT_TEARDOWN).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

CPU = time.process_time


def main(config: str, state: str) -> None:
    spent: dict[str, float] = {"start": CPU()}
    gc.disable()  # as `main` does for the commands that end without teardown
    before = CPU()
    from swarmgate.models.swarm import state_file
    from swarmgate.operator.cli import main as cli_main
    from swarmgate.operator.cli import offline
    from swarmgate.operator.planning import desired

    spent["imports"] = CPU() - before

    def timed(owner: Any, name: str, stage: str) -> None:
        inner: Callable[..., Any] = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = CPU()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[stage] = spent.get(stage, 0.0) + CPU() - start

        setattr(owner, name, wrapper)

    timed(state_file, "read_user_file", "read")
    timed(json, "loads", "json")  # the module state_file parses with
    timed(offline, "load_state_file", "_load")
    timed(offline, "decide_pass", "_decide")
    timed(desired, "build_route_table", "route_table")
    timed(desired, "render_nginx", "render")
    timed(desired, "render_bootstrap", "render")
    start = CPU()
    with open(os.devnull, "w") as out:
        if offline.cmd_render(config, state, out=out, hold=True) != 0:
            raise SystemExit("render failed")
    total = CPU() - start
    load, decide = spent.pop("_load"), spent.pop("_decide")
    spent["snapshot"] = load - spent["read"] - spent["json"]
    spent["decide_rest"] = decide - spent["route_table"] - spent["render"]
    spent["rest"] = total - load - decide
    json.dump({k: round(v, 4) for k, v in spent.items()}, sys.stdout)
    cli_main.end_process(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
