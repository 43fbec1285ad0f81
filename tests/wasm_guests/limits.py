"""A test-only guest for the CPU and memory bounds; `count` keeps a counter in guest
memory (to show a fresh instance after a trap)."""

import json

import wit_world
from componentize_py_types import Err

COUNTER = [0]


class WitWorld(wit_world.WitWorld):
    def start(self, config_json):
        return '{"state": "ready"}'

    def handle_tool(self, name, input_json):
        if name == "ping":
            return '"pong"'
        if name == "count":
            COUNTER[0] += 1
            return json.dumps(COUNTER[0])
        if name == "spin":
            while True:
                pass
        if name == "bomb":
            hog = []
            while True:
                hog.append(bytearray(1 << 20))
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
        pass
