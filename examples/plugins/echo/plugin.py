from tether import Plugin

plugin = Plugin()


@plugin.tool
async def echo(text: str, times: int = 1) -> str:
    """Repeat the text."""
    return " ".join([text] * times)
