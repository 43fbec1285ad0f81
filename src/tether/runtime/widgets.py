"""Dashboard widgets: `ctx.widgets` (capability `widgets.register`) and the host's registry.

A widget is a label and a `render()` function returning an HTML fragment (sync or async).
The dashboard calls every render when it refreshes, each under a deadline; the fragment is
sanitised with nh3 to a small set of harmless tags before it leaves the host, and the page
showing it runs under a strict Content-Security-Policy (see docs/dashboard.md). A render that
raises, times out or returns something other than text fails only its own widget.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nh3

from tether.contract.errors import RegistrationError
from tether.services.calls import call_plugin, wait_task

if TYPE_CHECKING:
    from tether.runtime.context import Context

RENDER_TIMEOUT_S = 5.0
"""Upper bound on one render; a plugin's own (shorter) timeout applies when it has one."""
MAX_HTML_CHARS = 256 * 1024
MAX_WIDGETS_PER_PLUGIN = 16
MAX_LABEL_CHARS = 80

ALLOWED_TAGS: frozenset[str] = frozenset(
    {
        *("a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd"),
        *("del", "details", "div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2"),
        *("h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p"),
        *("pre", "q", "s", "samp", "small", "span", "strong", "sub", "summary", "sup"),
        *("table", "tbody", "td", "tfoot", "th", "thead", "time", "tr", "u", "ul", "var"),
        *("meter", "progress"),
    }
)
"""Text, lists, tables and images. No script, style, iframe, object, embed, form, input,
button, svg, math, base, link or meta: they are stripped (script and style with content)."""

ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "*": {"class", "title", "lang", "dir"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "col": {"span"},
    "colgroup": {"span"},
    "ol": {"start"},
    "time": {"datetime"},
    "meter": {"value", "min", "max", "low", "high", "optimum"},
    "progress": {"value", "max"},
}
"""No `on*` handlers, no `style`, no `id` (ids could clobber the page's own)."""

URL_SCHEMES: frozenset[str] = frozenset({"http", "https", "mailto", "data"})
"""`javascript:`, `vbscript:` and every other scheme are dropped; `_url_filter` narrows
these further per attribute."""

_IMAGE_DATA = re.compile(r"^data:image/(png|gif|jpeg|webp);base64,[A-Za-z0-9+/=\s]*$")


def _url_filter(element: str, attribute: str, value: str) -> str | None:
    """Links: http(s), mailto or a path on this host. Images: a path on this host (e.g. the
    plugin's own route) or a base64 PNG/GIF/JPEG/WebP; nothing else, since the page's CSP
    would block other images anyway (and a broken image is noise in the operator's console)."""
    same_origin_path = value.startswith("/") and not value.startswith("//")
    if element == "a" and attribute == "href":
        ok = same_origin_path or value.lower().startswith(("http://", "https://", "mailto:"))
        return value if ok else None
    if element == "img" and attribute == "src":
        return value if same_origin_path or _IMAGE_DATA.match(value) else None
    return value


_KEY_CHARS = re.compile(r"[^a-z0-9]+")


def sanitise(html: str) -> str:
    """The fragment reduced to the allowed tags, attributes and URL schemes."""
    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        clean_content_tags={"script", "style", "template", "noscript", "textarea", "title"},
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=set(URL_SCHEMES),
        attribute_filter=_url_filter,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )


@dataclass(frozen=True, slots=True)
class Widget:
    """One registered widget. `key` is unique within the plugin (derived from the label)."""

    plugin_id: str
    key: str
    label: str
    render: Callable[[], Any]
    timeout_s: float

    @property
    def id(self) -> str:
        return f"{self.plugin_id}/{self.key}"


@dataclass(frozen=True, slots=True)
class RenderedWidget:
    """A render's outcome: sanitised `html`, or an `error` saying what went wrong."""

    id: str
    plugin: str
    label: str
    html: str | None
    error: str | None
    ms: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "plugin": self.plugin,
            "label": self.label,
            "html": self.html,
            "error": self.error,
            "ms": round(self.ms, 1),
        }


class WidgetRegistry:
    """Widgets of every active plugin, in registration order."""

    def __init__(self) -> None:
        self._widgets: dict[str, Widget] = {}

    def add(self, widget: Widget) -> None:
        if widget.id in self._widgets:
            raise RegistrationError(
                f"plugin {widget.plugin_id!r}: a widget labelled like {widget.label!r} is "
                "already registered; give each widget a distinct label"
            )
        mine = sum(1 for w in self._widgets.values() if w.plugin_id == widget.plugin_id)
        if mine >= MAX_WIDGETS_PER_PLUGIN:
            raise RegistrationError(
                f"plugin {widget.plugin_id!r}: at most {MAX_WIDGETS_PER_PLUGIN} widgets per plugin"
            )
        self._widgets[widget.id] = widget

    def remove(self, widget_id: str) -> bool:
        return self._widgets.pop(widget_id, None) is not None

    def remove_plugin(self, plugin_id: str) -> int:
        """Drop every widget of a plugin (at teardown); returns how many there were."""
        gone = [k for k, w in self._widgets.items() if w.plugin_id == plugin_id]
        for k in gone:
            del self._widgets[k]
        return len(gone)

    def widgets(self) -> list[Widget]:
        return list(self._widgets.values())

    async def render_all(self) -> list[RenderedWidget]:
        """Render every widget concurrently; each is bounded by its own deadline."""
        return list(await asyncio.gather(*(render_widget(w) for w in self.widgets())))


async def render_widget(widget: Widget) -> RenderedWidget:
    """Call the widget's render under its deadline and sanitise the result; never raises."""
    started = time.perf_counter()
    html: str | None = None
    error: str | None = None
    task = asyncio.get_running_loop().create_task(call_plugin(widget.render))
    if not await wait_task(task, widget.timeout_s):
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        error = f"render did not finish within {widget.timeout_s:g}s"
    elif task.cancelled():
        error = "render was cancelled"
    elif (exc := task.exception()) is not None:
        error = f"render failed: {type(exc).__name__}: {exc}"
    else:
        out = task.result()
        if not isinstance(out, str):
            error = f"render returned {type(out).__name__}; it must return an HTML string"
        elif len(out) > MAX_HTML_CHARS:
            error = f"render returned {len(out)} characters; the limit is {MAX_HTML_CHARS}"
        else:
            html = sanitise(out)
    ms = (time.perf_counter() - started) * 1000
    return RenderedWidget(widget.id, widget.plugin_id, widget.label, html, error, ms)


def widget_key(label: str) -> str:
    """The URL-safe key of a label: lower case, runs of other characters become `-`."""
    return _KEY_CHARS.sub("-", label.lower()).strip("-")


class PluginWidgets:
    """Register dashboard widgets: `ctx.widgets.register("Queue", render)`."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def register(self, label: str, render: Callable[[], Any]) -> str:
        """Show `render()`'s HTML fragment (sync or async; called on each dashboard refresh)
        under `label`; returns the widget id `<plugin-id>/<key>`."""
        ctx = self._ctx
        ctx.require("widgets.register", f"widget {label!r}")
        if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL_CHARS:
            raise RegistrationError(
                f"plugin {ctx.plugin_id!r}: a widget label is 1-{MAX_LABEL_CHARS} characters"
            )
        key = widget_key(label)
        if not key:
            raise RegistrationError(
                f"plugin {ctx.plugin_id!r}: widget label {label!r} needs a letter or digit"
            )
        if not callable(render):
            raise RegistrationError(
                f"plugin {ctx.plugin_id!r}: render for widget {label!r} is not callable"
            )
        timeout = min(RENDER_TIMEOUT_S, ctx._timeout_ms / 1000)
        widget = Widget(ctx.plugin_id, key, label.strip(), render, timeout)
        self._registry.add(widget)
        return widget.id

    def unregister(self, label: str) -> bool:
        """Remove one of this plugin's widgets by its label."""
        self._ctx.require("widgets.register", f"unregister widget {label!r}")
        return self._registry.remove(f"{self._ctx.plugin_id}/{widget_key(label)}")

    @property
    def _registry(self) -> WidgetRegistry:
        return self._ctx._services.widgets
