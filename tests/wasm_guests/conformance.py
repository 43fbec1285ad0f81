"""The conformance plugin as a component: the behaviours of tests/conformance_plugin/
plugin.py (and of channel.py's notification channel) through the `tether:plugin` world. Its
tools, hooks, subscriptions, jobs, command, prompt and channel are listed in its manifest
(tests/conformance_plugin/wasm.toml). Hook and event values cross as JSON in the
tagged form ({"__tether_type__": "ToolCall", ...}); `null` leaves a value unchanged."""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import events, http, storage, user_storage

TAG = "__tether_type__"
STATE = {"config": {}}


def tagged(name, **fields):
    return {TAG: name, **fields}


def store_get(key, user=""):
    raw = user_storage.get(user, key) if user else storage.get(key)
    return None if raw is None else json.loads(raw)


def store_set(key, value, user=""):
    if user:
        user_storage.set(user, key, json.dumps(value))
    else:
        storage.set(key, json.dumps(value))


# Tools -----------------------------------------------------------------------------------


def echo(args):
    return " ".join([args["text"]] * args.get("times", 1))


def put(args):
    store_set(args["key"], args["value"], args.get("user", ""))
    return "stored"


def get(args):
    return {"value": store_get(args["key"], args.get("user", ""))}


def fetch(args):
    response = json.loads(http.request("GET", args["url"], "{}", ""))
    return {"status": response["status"], "body": response["body"]}


def settings(args):
    return STATE["config"]


TOOLS = {"echo": echo, "put": put, "get": get, "fetch": fetch, "settings": settings}


# Hooks (arguments in a list, in the order the in-process hook takes them) ----------------


def before_tool_call(call):
    text = call["arguments"].get("text")
    if text == "forbidden":
        return tagged("Block", content="blocked by conformance", is_error=True)
    if text == "rewrite":
        return {**call, "arguments": {**call["arguments"], "text": "rewritten"}}
    return None


def after_tool_call(call, result):
    if call["arguments"].get("text") == "decorate":
        return {**result, "content": result["content"] + " (after)"}
    return None


def transform_user_input(text):
    if text == "intercept me":
        return tagged("Intercept", reply="intercepted by conformance")
    return text.replace("colour", "color")


def before_model_call(messages, config):
    note = tagged("Message", role="system", content=f"conformance saw {len(messages)}")
    return [*messages, note]


def after_model_call(turn):
    return tagged(
        "TurnResult",
        content=turn["content"].upper(),
        tool_calls=turn["tool_calls"],
        reasoning=turn["reasoning"],
    )


def transform_system_prompt(prompt):
    return prompt + " | conformance"


def filter_tools(tools):
    return [t for t in tools if not t["name"].endswith("_hidden")]


def after_run(reason):
    store_set("after_run", reason)  # the reason's value, e.g. "complete"


HOOKS = {
    "before_tool_call": before_tool_call,
    "after_tool_call": after_tool_call,
    "transform_user_input": transform_user_input,
    "before_model_call": before_model_call,
    "after_model_call": after_model_call,
    "transform_system_prompt": transform_system_prompt,
    "filter_tools": filter_tools,
    "after_run": after_run,
}


# Events ----------------------------------------------------------------------------------


def message_received(event):
    seen = {"name": event["name"], "data": event["data"], "source": event["source"]}
    store_set("last_event", seen)
    # only `conf` subscribes (its grant has events.subscribe), and emits in its namespace
    events.emit("conf.noticed", json.dumps({"text": event["data"]["text"]}))
    return None


def run_start(start):
    if "forbidden" in start["prompt"]:
        return tagged("RunStartResult", block="conformance blocks this run")
    caller = start["caller"]["id"]
    return tagged("RunStartResult", system_prompt=f"conformance rules for {caller}")


def run_end(end):
    if end["reply"] == "secret":
        return tagged("RunEndResult", suppress=True)
    return tagged("RunEndResult", reply=end["reply"] + " -- conformance")


EVENTS = {"message.received": message_received, "run.start": run_start, "run.end": run_end}


# Commands and notification channels ------------------------------------------------------


def confping(args):
    return f"pong {args}"


COMMANDS = {"confping": confping}


def deliver(request):
    message = f"delivered to {request['recipient']}: {request['text']}"
    return tagged("NotificationResult", ok=True, message=message)


CHANNELS = {"conformance": deliver}


class WitWorld(wit_world.WitWorld):
    def start(self, config_json):
        STATE["config"] = json.loads(config_json)
        return '{"state": "ready"}'

    def handle_tool(self, name, input_json):
        if name not in TOOLS:
            raise Err(f"unknown tool {name!r}")
        return json.dumps(TOOLS[name](json.loads(input_json)))

    def handle_ingress(self, name, event_json):
        return '{"accepted": false, "output_commands": []}'

    def handle_hook(self, kind, args_json):
        if kind not in HOOKS:
            raise Err(f"unknown hook {kind!r}")
        return json.dumps(HOOKS[kind](*json.loads(args_json)))

    def handle_event(self, event, arg_json):
        if event not in EVENTS:
            raise Err(f"unknown event {event!r}")
        return json.dumps(EVENTS[event](json.loads(arg_json)))

    def run_job(self, name):
        if name != "tick":
            raise Err(f"unknown job {name!r}")
        store_set("ticks", (store_get("ticks") or 0) + 1)

    def handle_command(self, name, args):
        if name not in COMMANDS:
            raise Err(f"unknown command {name!r}")
        return COMMANDS[name](args)

    def deliver_notification(self, kind, request_json):
        if kind not in CHANNELS:
            raise Err(f"unknown channel {kind!r}")
        return json.dumps(CHANNELS[kind](json.loads(request_json)))

    def status(self):
        return '{"state": "ready"}'

    def stop(self):
        pass
