"""The `swarmgate` command line: one entry point, Interlock's shape (`swarmgate -D run -c FILE`).

User mistakes (a bad config file, a missing state file, Docker not reachable) end with one line on
stderr and exit 2; `plan` follows `kubectl diff` (0 converged, 1 changes pending, 2 error).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence

from swarmgate import __version__
from swarmgate.operator.cli.exits import guarded

DEFAULT_CHANNEL_KEY = "/run/secrets/swarmgate-channel"
# The offline commands that read a whole Swarm from a state file. Once one has written its output,
# its process ends without freeing what it built: at 10,000 services that is some 300 MB of objects,
# and the interpreter's teardown (a last collection, then every object freed one by one) cost ~0.4 s
# of CPU, a seventh of the command, for nothing. They open no file for writing and register no exit
# handler; `check-config` does (validate.py removes its throwaway TLS files at exit), so it ends normally.
ENDS_WITHOUT_TEARDOWN = frozenset({"render", "routes"})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swarmgate",
        description="Label-driven layer-7 routing for Docker Swarm: an Interlock-compatible operator.",
    )
    parser.add_argument("-D", "--debug", action="store_true", help="log at debug level")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="log line format (json for log shippers); default text")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("-c", "--config", required=True, metavar="FILE",
                         help="the operator's TOML configuration (Interlock's format)")
        return cmd

    def with_channel_key(cmd: argparse.ArgumentParser) -> argparse.ArgumentParser:
        cmd.add_argument("--channel-key", metavar="FILE",
                         default=os.environ.get("SWARMGATE_CHANNEL_KEY", DEFAULT_CHANNEL_KEY),
                         help="the delivery channel's key, which proxies trust (default: the Swarm secret "
                              f"mounted at {DEFAULT_CHANNEL_KEY}; an operator run as a plain process keeps "
                              "the key it creates in this file; env SWARMGATE_CHANNEL_KEY)")
        return cmd

    with_channel_key(with_config("run", "run the operator: watch the Swarm and keep every proxy converged"))
    plan = with_config("plan", "show what one reconcile pass would change (exit 0 converged, 1 pending, 2 error)")
    with_channel_key(plan)
    plan.add_argument("--state", metavar="STATE.json",
                      help="plan against a state file written by `snapshot` instead of the live Swarm")
    render = with_config("render", "print the rendered proxy configuration(s) for a state file")
    render.add_argument("--state", required=True, metavar="STATE.json", help="state file written by `snapshot`")
    render.add_argument("--extension", metavar="NAME", help="only this extension (default: all)")
    routes = with_config("routes", "print the route table and the services set aside, with reasons")
    routes.add_argument("--state", required=True, metavar="STATE.json", help="state file written by `snapshot`")
    status = with_config("status", "show which config each proxy task serves, per node, and whether it is current "
                                   "(exit 0 all current, 1 not yet)")
    with_channel_key(status)
    status.add_argument("--endpoint", metavar="URL",
                        help="read the status of the operator at URL (default: ask every proxy task directly)")
    status.add_argument("--json", action="store_true", help="print the status document as JSON")
    snapshot = with_config("snapshot", "write the Swarm's services, tasks, nodes, configs and secrets to a state file")
    snapshot.add_argument("-o", "--output", default="-", metavar="STATE.json", help="output file (default stdout)")
    check = sub.add_parser("check-config", help="validate a configuration file (exit 0, or 2 with the error)",
                           description="Validate a configuration file: exit 0, or exit 2 with a one-line error.")
    check.add_argument("file", metavar="FILE")
    sub.add_parser("version", help="print the version", description="Print swarmgate's version.")
    with_channel_key(with_config("rotate-key", "add a new generation of the channel key; the operators hand it to "
                                               "every proxy task without replacing one"))
    sub.add_parser("channel-key", help="print a new delivery-channel key (for `docker secret create "
                   "swarmgate-channel -`)", description="Print a new delivery-channel key to stdout: pipe it "
                   "straight into `docker secret create swarmgate-channel -`; do not keep a copy.")
    return parser


def _dispatch(args: argparse.Namespace, *, ends_process: bool = False) -> int:
    # Imported per command so `swarmgate version` and `check-config` never import the docker SDK.
    command: str = args.command
    if command == "version":
        print(f"swarmgate {__version__}")
        return 0
    if command == "channel-key":
        from swarmgate.operator.delivery.channel_key import ChannelKey

        sys.stdout.write(ChannelKey.generate().file_text())
        return 0
    if command == "check-config":
        from swarmgate.operator.cli.offline import cmd_check_config

        return cmd_check_config(args.file)
    if command == "render":
        from swarmgate.operator.cli.offline import cmd_render

        return cmd_render(args.config, args.state, args.extension, hold=ends_process)
    if command == "routes":
        from swarmgate.operator.cli.offline import cmd_routes

        return cmd_routes(args.config, args.state, hold=ends_process)
    from swarmgate.operator.cli import commands

    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": commands.cmd_run,
        "plan": commands.cmd_plan,
        "status": commands.cmd_status,
        "snapshot": commands.cmd_snapshot,
        "rotate-key": commands.cmd_rotate_key,
    }
    return handlers[command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code. Called without `argv` (the console script, `python -m
    swarmgate`), it is the whole process: a command of `ENDS_WITHOUT_TEARDOWN` then ends the process
    itself (`end_process`), where one called with `argv` (tests, other Python code) returns."""
    args = _parser().parse_args(argv)
    ends_at_once = argv is None and args.command in ENDS_WITHOUT_TEARDOWN
    if ends_at_once:
        # One pass, then the process ends: a collection (the pass pauses them, see gc_pause.py, but
        # the next allocation after it would start one) could only walk what stays alive to the end.
        gc.disable()
    from swarmgate.operator.telemetry import logs

    logs.configure(debug=args.debug, json_format=args.log_format == "json")
    try:
        code = guarded(lambda: _dispatch(args, ends_process=ends_at_once), sys.stderr)
    except KeyboardInterrupt:
        return 130
    if ends_at_once:
        end_process(code)
    return code


def end_process(code: int) -> None:
    """End the process with `code` now, once everything written is out: the log handlers, stdout and
    stderr are flushed, then `os._exit` skips the teardown. Returns (to end the usual way, which
    reports the error) only when a flush fails, such as stdout piped into a reader that has gone."""
    try:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
