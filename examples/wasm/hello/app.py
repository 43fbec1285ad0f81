"""A Tether plugin written in Python and built into a WebAssembly component.

Build it (see docs/wasm.md):

    componentize-py -d wit -w plugin componentize app -p examples/wasm/hello -o hello.wasm

The class name `WitWorld` is what componentize-py looks for; every export of the
`tether:plugin/plugin` world is a method. Imports (storage, user_storage, http, events,
logging) are the host's capability membrane: a call without the grant raises `Err` with a
message. Results are JSON text; Tether's types (Intercept, ToolCall, Event, ...) are JSON
objects tagged with "__tether_type__".
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import events, http, logging, storage, user_storage

# componentize-py may make a new WitWorld object per call: keep state at module level
# (and anything durable in host storage: a trapped instance is replaced by a fresh one).
STATE = {"greeting": "Hello"}


def _text(result: object) -> str:
    return json.dumps(result)


class WitWorld(wit_world.WitWorld):
    def start(self, config_json: str) -> str:
        STATE["greeting"] = json.loads(config_json).get("greeting", "Hello")
        logging.log("info", "hello plugin started")
        return _text({"state": "ready"})

    def handle_tool(self, name: str, input_json: str) -> str:
        args = json.loads(input_json)
        if name == "greet":
            return _text(f"{STATE['greeting']}, {args['name']}!")
        if name == "ping":
            return '"pong"'
        if name == "remember":
            storage.set(args["key"], json.dumps(args["value"]))
            return _text({"stored": args["key"]})
        if name == "recall":
            raw = storage.get(args["key"])
            return _text(None if raw is None else json.loads(raw))
        if name == "fetch":
            response = json.loads(http.request("GET", args["url"], "{}", ""))
            return _text({"status": response["status"], "body": response["body"][:200]})
        raise Err(f"unknown tool {name!r}")

    def handle_ingress(self, name: str, event_json: str) -> str:
        event = json.loads(event_json)
        text = event["payload"].get("text", "")
        commands = [{"type": "websocket_send", "text": f"echo: {text}"}]
        if text == "shout":
            commands.append({"type": "emit", "event": "hello.shouted", "data": {"text": text}})
        if text == "flood":
            commands = [{"type": "websocket_send", "text": str(i)} for i in range(100)]
        if text == "sneak":
            commands.append({"type": "emit", "event": "other.thing", "data": {}})
        try:
            seen = {k: event[k] for k in ("kind", "source", "attempt", "correlation_id")}
            events.emit("hello.seen", json.dumps({"ingress": name, **seen}))
        except Err as exc:  # events.emit not granted: carry on without it
            logging.log("warning", f"emit refused: {exc.value}")
        return _text({"accepted": True, "output_commands": commands})

    def handle_hook(self, kind: str, args_json: str) -> str:
        # plugin.toml lists hooks = ["transform_user_input"]: args are [text]
        if kind == "transform_user_input":
            (text,) = json.loads(args_json)
            if text.strip() == "/hello":  # answer without the model
                reply = f"{STATE['greeting']} from a wasm component!"
                return _text({"__tether_type__": "Intercept", "reply": reply})
            return "null"  # leave the input unchanged
        raise Err(f"unknown hook {kind!r}")

    def handle_event(self, event: str, arg_json: str) -> str:
        # plugin.toml subscribes to message.received: count each user's messages
        if event == "message.received":
            data = json.loads(arg_json)["data"]
            user = data.get("user")
            if isinstance(user, str) and user:
                raw = user_storage.get(user, "messages")
                count = 0 if raw is None else json.loads(raw)
                user_storage.set(user, "messages", json.dumps(count + 1))
        return "null"

    def run_job(self, name: str) -> None:
        # plugin.toml schedules the job "tick" every hour
        if name != "tick":
            raise Err(f"unknown job {name!r}")
        raw = storage.get("ticks")
        storage.set("ticks", json.dumps((0 if raw is None else json.loads(raw)) + 1))

    def handle_command(self, name: str, args: str) -> str:
        # plugin.toml lists the command "wave": "/wave Ada" answers without the model
        if name == "wave":
            return f"{STATE['greeting']}, {args or 'world'}!"  # plain text, not JSON
        raise Err(f"unknown command {name!r}")

    def deliver_notification(self, kind: str, request_json: str) -> str:
        raise Err("hello claims no notification channels")  # plugin.toml lists none

    def status(self) -> str:
        return _text({"state": "ready"})

    def stop(self) -> None:
        logging.log("info", "hello plugin stopping")
