"""A test-only guest for hooks, events, jobs, user storage, commands and notification
channels (tests/test_wasm_tier.py).

Hook arguments and results use the tagged form: {"__tether_type__": "ToolCall", ...}.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import storage, user_storage


def tagged(kind, **fields):
    return json.dumps({"__tether_type__": kind, **fields})


def bump(key):
    raw = storage.get(key)
    storage.set(key, json.dumps((0 if raw is None else json.loads(raw)) + 1))


class WitWorld(wit_world.WitWorld):
    def start(self, config_json):
        return '{"state": "ready"}'

    def handle_tool(self, name, input_json):
        args = json.loads(input_json)
        if name == "echo":
            return json.dumps(args["text"])
        if name == "raw":
            return "plain words, not JSON " + "x" * 200
        if name == "user_put":
            user_storage.set(args["user"], args["key"], json.dumps(args["value"]))
            return "null"
        if name == "user_get":
            raw = user_storage.get(args["user"], args["key"])
            return "null" if raw is None else raw
        if name == "user_keys":
            return json.dumps(user_storage.list(args["user"], ""))
        if name == "user_drop":
            return json.dumps(user_storage.delete(args["user"], args["key"]))
        raise Err("unknown tool " + name)

    def handle_ingress(self, name, event_json):
        return '{"accepted": true, "output_commands": []}'

    def handle_hook(self, kind, args_json):
        args = json.loads(args_json)
        if kind == "before_tool_call":
            call = args[0]
            text = str(call["arguments"].get("text", ""))
            if "forbidden" in text:
                return tagged("Block", content="blocked by the wasm guard")
            if text == "crash":
                raise Err("the guard failed on purpose")
            if text == "garbled":
                return "{not json"
            if text.startswith("shout:"):
                call["arguments"]["text"] = text.upper()
                return json.dumps(call)
            return "null"
        if kind == "transform_user_input":
            text = args[0]
            if text == "/ping":
                return tagged("Intercept", reply="pong from wasm")
            return json.dumps(text + " (seen by wasm)")
        raise Err("unknown hook " + kind)

    def handle_event(self, event, arg_json):
        arg = json.loads(arg_json)
        if event == "message.received":
            storage.set("last_event", arg_json)
            return "null"
        if event == "run.start":
            if "blockme" in arg["prompt"]:
                return tagged("RunStartResult", block="wasm refuses " + arg["caller"]["id"])
            return tagged("RunStartResult", system_prompt="wasm was here")
        if event == "run.end":
            return tagged("RunEndResult", reply=arg["reply"] + " [" + arg["reason"] + "]")
        raise Err("unknown event " + event)

    def run_job(self, name):
        if name == "tick":
            bump("ticks")
            return None
        raise Err("job " + name + " failed on purpose")

    def handle_command(self, name, args):
        if name == "shout":
            return args.upper()
        raise Err("command " + name + " failed on purpose")

    def deliver_notification(self, kind, request_json):
        request = json.loads(request_json)
        if kind == "loose":  # a plain object, not a tagged NotificationResult
            return json.dumps({"ok": True})
        if kind == "reject":
            why = "no such recipient " + request["recipient"]
            return tagged("NotificationResult", ok=False, message=why, retryable=False)
        if kind == "echo":  # the request as the component received it
            return tagged("NotificationResult", ok=True, message="echo", data=request)
        raise Err("channel " + kind + " failed on purpose")

    def status(self):
        return '{"state": "ready"}'

    def stop(self):
        pass
