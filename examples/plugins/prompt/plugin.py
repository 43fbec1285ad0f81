"""A prompt plugin: transforms the system prompt and contributes a line of its own."""

from tether import Plugin

plugin = Plugin()

plugin.system_prompt("Answer in plain English; prefer short sentences.")


@plugin.transform_system_prompt
def house_style(prompt: str) -> str:
    return prompt.rstrip() + "\n\nHouse style: cite the tool you used for every fact."


@plugin.command("style", description="Show the house style rules.")
def style(args: str) -> str:
    return "Plain English, short sentences, cite tools."
