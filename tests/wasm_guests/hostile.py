"""A test-only hostile guest: each tool misbehaves in one way, and `start` / `stop` hang
when the plugin's config says so ({"hang_start": "spin" | "sleep"}, same for "hang_stop";
a sleep lasts "sleep_s" seconds, default an hour). `ping` and `count` answer normally
(`count` keeps a counter in guest memory, to show whether the instance was replaced)."""

import json
import os
import sys
import time

import wit_world
from componentize_py_types import Err

STATE = {"config": {}, "count": 0}


def _hang(how, seconds=None):
    if how == "spin":
        while True:
            pass
    if how == "sleep":
        time.sleep(seconds or STATE["config"].get("sleep_s", 3600))


def _down(n):
    return _down(n + 1) + 1


def _down_native(n):
    # each level passes through C code (map, list), so it also spends native stack
    return list(map(_down_native, [n + 1]))


class WitWorld(wit_world.WitWorld):
    def start(self, config_json):
        STATE["config"] = json.loads(config_json)
        _hang(STATE["config"].get("hang_start"))
        return '{"state": "ready"}'

    def handle_tool(self, name, input_json):
        if name == "ping":
            return '"pong"'
        if name == "count":
            STATE["count"] += 1
            return json.dumps(STATE["count"])
        if name == "spin":
            _hang("spin")
        if name == "sleep":
            _hang("sleep", json.loads(input_json).get("seconds"))
            return '"slept"'
        if name == "never":
            # never returns, never spends CPU: short sleeps forever
            while True:
                time.sleep(0.05)
        if name == "bomb":
            hog = []
            while True:
                hog.append(bytearray(1 << 20))
        if name == "huge":
            return '"' + "x" * 20_000_000 + '"'
        if name == "env":  # looks for the host's secrets
            return json.dumps(dict(os.environ))
        if name == "not_json":
            return "{this is not JSON"
        if name == "exit":
            os._exit(3)
        if name == "sys_exit":
            sys.exit(2)
        if name == "interrupt":
            raise KeyboardInterrupt
        if name == "recurse":
            return json.dumps(_down(0))
        if name == "deep":
            sys.setrecursionlimit(10_000_000)
            return json.dumps(_down_native(0))
        raise Err("unknown tool " + name)

    def handle_ingress(self, name, event_json):
        return '{"accepted": true, "output_commands": []}'

    def handle_hook(self, kind, args_json):
        return "null"

    def handle_event(self, event, arg_json):
        return "null"

    def run_job(self, name):
        return None

    def handle_command(self, name, args):
        raise Err("this component has no commands")

    def deliver_notification(self, kind, request_json):
        raise Err("this component claims no notification channels")

    def status(self):
        return '{"state": "ready"}'

    def stop(self):
        _hang(STATE["config"].get("hang_stop"))
