"""The LM-Debugger as an ipywidgets app (in a notebook, or served as a page by Voilà).

>>> app = DebuggerApp.from_model(view, tokenizer)   # doctest: +SKIP
>>> app                                             # doctest: +SKIP  (displays it)

Prompt box, Trace and Generate; a per-layer table (logit lens before/after attention
and FF, the dominant sub-updates as buttons, the dominant heads); value details on
click (top 50 tokens, switch on/off, name it); keyword search over the projection
index; the interventions list (enable toggle, off/on/number, remove); annotations; the
attribution, patching and session panels of :mod:`lmscope.debugger.app_views`.
Every handler catches its errors and shows them as a message, never a traceback,
so the app keeps working. Widget classes (``lmscope-*``) give browser tests handles.
The engine behind it is :class:`lmscope.debugger.engine.LMDebugger`; ipywidgets is imported
inside :class:`DebuggerApp`, so this module imports without it.
"""

from __future__ import annotations

import functools
from typing import Callable

from lmscope.debugger.annotations import Annotations
from lmscope.debugger.app_views import AttributionPanel, PatchingPanel, SessionPanel
from lmscope.debugger.engine import LMDebugger
from lmscope.debugger.interventions import Intervention, parse_coefficient
from lmscope.debugger.search import ValueSearch
from lmscope.display import esc
from lmscope.embedding.index import ProjectionIndex

MODE_LABELS = ("off", "on", "value")


def _tokens_html(tops, n: int = 3) -> str:
    """The first ``n`` of ``[(text, probability)]`` as HTML."""
    return " ".join(f"<code>{esc(t)}</code><small>{p:.2f}</small>" for t, p in tops[:n])


class DebuggerApp:
    """The debugger app for one model; ``.widget`` is the root widget (it displays itself)."""

    def __init__(self, view, tokenizer, index=None, annotations=None, prompt: str = "The capital of France is",
                 n_show: int = 5, search=None):
        import ipywidgets as W

        self.W = W
        self.view = view
        self.tokenizer = tokenizer
        self.annotations = annotations
        self.debugger = LMDebugger(view, tokenizer, index=index, annotations=annotations)
        if search is None and index is not None:
            search = ValueSearch(index, tokenizer, annotations)
        self.search_engine = search
        self.n_show = n_show
        self.interventions: list[Intervention] = []
        self.last_trace = None
        self.last_generation: str | None = None
        self.selected: str | None = None

        cls = self.cls

        full = W.Layout(width="98%")
        # -- prompt and actions
        self.prompt = cls(W.Textarea(value=prompt, placeholder="Type a prompt", layout=W.Layout(width="98%", height="60px")), "prompt")
        self.position = W.IntText(value=-1, description="position", layout=W.Layout(width="160px"))
        self.trace_button = cls(W.Button(description="Trace", button_style="primary", icon="search"), "trace")
        self.n_tokens = W.Dropdown(options=[1, 5, 10, 20], value=10, description="tokens", layout=W.Layout(width="150px"))
        self.generate_button = cls(W.Button(description="Generate", icon="play"), "generate")
        self.progress = cls(W.IntProgress(min=0, max=1, value=0, layout=W.Layout(width="200px", visibility="hidden")), "progress")
        self.message = cls(W.HTML(), "message")
        self.prediction = cls(W.HTML(), "prediction")
        self.generation = cls(W.HTML(), "generation")
        self.table = cls(W.VBox(layout=W.Layout(max_height="640px", overflow_y="auto", width="98%",
                                                 display="flex", flex_flow="column")), "table")
        # -- value details
        self.details_title = cls(W.HTML("<i>Click a sub-update or a search hit to see its value's top tokens.</i>"), "details-title")
        self.details_tokens = cls(W.HTML(), "details")
        self.details_on = W.Button(description="switch on", icon="plus")
        self.details_off = W.Button(description="switch off", icon="minus")
        self.details_label = W.Text(placeholder="name this value, e.g. sports", layout=W.Layout(width="260px"))
        self.details_save = W.Button(description="save name", icon="tag")
        # -- search
        self.search_box = cls(W.Text(placeholder="find values by word, e.g. football or 'happy, joy'", layout=W.Layout(width="420px")), "search")
        self.search_button = cls(W.Button(description="Search", icon="search"), "search-button")
        self.search_results = cls(W.VBox(), "search-results")
        # -- interventions
        self.add_name = cls(W.Text(placeholder="L12D34", layout=W.Layout(width="120px")), "add-name")
        self.add_coeff = cls(W.Text(value="on", placeholder="off / on / number", layout=W.Layout(width="140px")), "add-coeff")
        self.add_button = cls(W.Button(description="Add intervention", icon="plus"), "add")
        self.interventions_box = cls(W.VBox(), "interventions")
        # -- annotations
        self.annotation_box = cls(W.Text(placeholder="L12D34 = sports", layout=W.Layout(width="300px")), "annotation")
        self.annotation_button = W.Button(description="Save name", icon="tag")
        self.annotation_list = cls(W.HTML(), "annotations")

        self.trace_button.on_click(self._safe(lambda _: self.run_trace()))
        self.generate_button.on_click(self._safe(lambda _: self.run_generate()))
        self.search_button.on_click(self._safe(lambda _: self.run_search()))
        self.add_button.on_click(self._safe(lambda _: self.add_intervention(self.add_name.value, self.add_coeff.value)))
        self.details_on.on_click(self._safe(lambda _: self.add_intervention(self.selected, "on")))
        self.details_off.on_click(self._safe(lambda _: self.add_intervention(self.selected, "off")))
        self.details_save.on_click(self._safe(lambda _: self.save_annotation(f"{self.selected} = {self.details_label.value}")))
        self.annotation_button.on_click(self._safe(lambda _: self.save_annotation(self.annotation_box.value)))

        self.attribution = AttributionPanel(self)
        self.patching = PatchingPanel(self)
        self.sessions = SessionPanel(self)
        section = lambda text: W.HTML(f"<h4 style='margin:6px 0 2px 0'>{text}</h4>")
        self.widget = W.VBox([
            self.prompt,
            W.HBox([self.trace_button, self.position, self.generate_button, self.n_tokens, self.progress]),
            self.message, self.prediction, self.generation,
            section("Per layer: logit lens before/after attention and FF; dominant FF sub-updates (click); dominant heads"),
            self.table,
            section("Value details"), self.details_title,
            W.HBox([self.details_on, self.details_off, self.details_label, self.details_save]), self.details_tokens,
            section("Interventions (set at every position)"),
            W.HBox([self.add_name, self.add_coeff, self.add_button]), self.interventions_box,
            section("Search values"), W.HBox([self.search_box, self.search_button]), self.search_results,
            section("Names"), W.HBox([self.annotation_box, self.annotation_button]), self.annotation_list,
            section("Attribution: exact direct effect of every head and FF value on a token at the position"),
            self.attribution.widget,
            section("Patching: restore one activation of the prompt in a corrupted prompt"), self.patching.widget,
            section("Session: save, load, export"), self.sessions.widget,
        ], layout=full)
        self.widget.add_class("lmscope-debugger")
        self._show_annotations()

    @staticmethod
    def cls(widget, name: str):
        """Give ``widget`` the class ``lmscope-<name>`` (a handle for browser tests); returns it."""
        widget.add_class(f"lmscope-{name}")
        return widget

    @classmethod
    def from_model(cls, view, tokenizer, build_index: bool = True, **kwargs) -> "DebuggerApp":
        """The app with the (cached) projection index of ``view`` and the saved annotations."""
        index = ProjectionIndex.build(view, k=50) if build_index else None
        return cls(view, tokenizer, index=index, annotations=Annotations.for_model(view), **kwargs)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # -- error handling and progress --------------------------------------------------------
    def _safe(self, fn: Callable) -> Callable:
        """Wrap a handler: errors become a message in the app, never a traceback."""

        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (ValueError, IndexError, KeyError) as err:
                self.show_message(str(err).strip("'\""), error=True)
            except Exception as err:  # noqa: BLE001 - the app must keep working
                self.show_message(f"Something went wrong ({type(err).__name__}): {err}", error=True)
            finally:
                self.progress.layout.visibility = "hidden"
                for b in (self.trace_button, self.generate_button):
                    b.disabled = False

        return run

    def show_message(self, text: str, error: bool = False) -> None:
        color = "#b00020" if error else "#555"
        self.message.value = f"<span style='color:{color}'>{esc(text)}</span>" if text else ""

    def _progress(self, done: int, total: int) -> None:
        self.progress.layout.visibility = "visible"
        self.progress.max = max(total, 1)
        self.progress.value = done

    # -- trace --------------------------------------------------------------------------------
    def run_trace(self) -> None:
        self.trace_button.disabled = True
        self.show_message("tracing…")
        trace = self.debugger.trace(self.prompt.value, self.position.value, self.interventions)
        self.last_trace = trace
        active = [iv.describe() for iv in self.interventions if iv.enabled]
        self.prediction.value = (
            f"<b>Prediction</b> after <code>{esc(trace.tokens[trace.position])}</code> "
            f"(position {trace.position}{'; with ' + ', '.join(active) if active else ''}): "
            + _tokens_html(trace.prediction, 5)
        )
        self._show_table(trace)
        self.show_message("")

    def _show_table(self, trace) -> None:
        W = self.W
        rows = []
        for lt in trace.layers:
            lens = (f"<b>L{lt.layer}</b> before attn {_tokens_html(lt.before_attn, 2)} &nbsp;| after attn "
                    f"{_tokens_html(lt.after_attn, 2)} &nbsp;| after FF {_tokens_html(lt.after_ff, 3)}"
                    f"<br><small>heads: " + ", ".join(f"H{h.head} {esc(' '.join(h.tokens[:3]))}" for h in lt.heads)
                    + "</small>")
            buttons = []
            for u in lt.ff_updates[: self.n_show]:
                label = f"{u.name}{' ' + u.annotation if u.annotation else ''} {u.tokens[0] if u.tokens else ''}"
                b = W.Button(description=label[:28], tooltip=f"{u.name}: m={u.coeff:.2f}, score={u.score:.2f}; "
                             + " ".join(u.tokens), layout=W.Layout(width="auto", height="26px"))
                b.add_class("lmscope-subupdate")
                b.on_click(self._safe(lambda _, name=u.name: self.show_value(name)))
                buttons.append(b)
            row = W.VBox([W.HTML(lens), W.HBox(buttons, layout=W.Layout(flex_flow="row wrap"))],
                         layout=W.Layout(border_bottom="1px solid #ddd", padding="2px", flex="0 0 auto"))
            row.add_class("lmscope-row")
            rows.append(row)
        self.table.children = rows

    def table_rows(self) -> list[dict]:
        """The shown table as rows of text (one per layer); empty before the first trace."""
        return [] if self.last_trace is None else self.last_trace.table()

    # -- generation ------------------------------------------------------------------------
    def run_generate(self) -> None:
        self.generate_button.disabled = True
        self.show_message("generating…")
        text = self.debugger.generate_text(self.prompt.value, int(self.n_tokens.value), self.interventions,
                                           progress=self._progress)
        self.last_generation = text
        active = [iv.describe() for iv in self.interventions if iv.enabled]
        self.generation.value = (f"<b>Greedy continuation</b>{' with ' + esc(', '.join(active)) if active else ''}: "
                                 f"<span style='background:#eef'>{esc(text)}</span>")
        self.show_message("")

    # -- value details ------------------------------------------------------------------------
    def show_value(self, name: str) -> None:
        d = self.debugger.value_details(name, k=50)
        self.selected = d.name
        label = f" = <b>{esc(d.annotation)}</b>" if d.annotation else ""
        self.details_title.value = f"<b>{d.name}</b>{label} &nbsp; ||v|| = {d.norm:.2f}; top 50 tokens of v·W_U:"
        self.details_label.value = d.annotation or ""
        self.details_tokens.value = "<div style='line-height:1.8'>" + " ".join(
            f"<code>{esc(t)}</code><small>{s:.2f}</small>" for t, s in zip(d.tokens, d.scores)) + "</div>"

    # -- interventions --------------------------------------------------------------------------
    def add_intervention(self, name: str | None, coefficient="on") -> Intervention:
        if not name:
            raise ValueError("Choose a value first: click a sub-update or a search hit, or type a name like L12D34.")
        iv = Intervention.parse(name, coefficient, view=self.view)
        self.interventions = [x for x in self.interventions if x.name != iv.name] + [iv]
        self._show_interventions()
        self._retrace()
        return iv

    def set_intervention(self, name: str, coefficient=None, enabled: bool | None = None) -> None:
        """Change an intervention's coefficient ('off', 'on', a number) or its enabled flag."""
        for i, iv in enumerate(self.interventions):
            if iv.name == name:
                if coefficient is not None:
                    iv = iv.with_coefficient(coefficient)
                if enabled is not None:
                    iv = Intervention(iv.layer, iv.unit, iv.mode, iv.value, bool(enabled))
                self.interventions[i] = iv
                self._retrace()
                return
        raise KeyError(f"No intervention on {name}: add it first.")

    def remove_intervention(self, name: str) -> None:
        self.interventions = [iv for iv in self.interventions if iv.name != name]
        self._show_interventions()
        self._retrace()

    def _retrace(self) -> None:
        if self.last_trace is not None and self.prompt.value.strip():
            self.run_trace()

    def _show_interventions(self) -> None:
        W = self.W
        rows = []
        for iv in self.interventions:
            label = self.annotations.get(iv.name) if self.annotations is not None else None
            enabled = W.Checkbox(value=iv.enabled, description=iv.name + (f" ({label})" if label else ""),
                                 indent=False, layout=W.Layout(width="180px"))
            mode = W.ToggleButtons(options=MODE_LABELS, value="value" if iv.mode == "set" else iv.mode,
                                   style={"button_width": "60px"})
            coeff = W.Text(value="" if iv.value is None else f"{iv.value:g}", placeholder="number",
                           continuous_update=False, layout=W.Layout(width="100px"))
            remove = W.Button(icon="times", tooltip="remove", layout=W.Layout(width="40px"))
            enabled.observe(self._safe(lambda ch, n=iv.name: self.set_intervention(n, enabled=ch["new"])), names="value")

            def on_mode(ch, n=iv.name, box=coeff):
                if ch["new"] == "value":
                    if box.value.strip():
                        self.set_intervention(n, box.value)
                    else:
                        self.show_message(f"Type a coefficient for {n} in the box next to it.")
                else:
                    self.set_intervention(n, ch["new"])

            def on_coeff(ch, n=iv.name, toggle=mode):
                parse_coefficient(ch["new"])  # a clear error before anything changes
                self.set_intervention(n, ch["new"])
                if toggle.value != "value" and ch["new"].strip().lower() not in ("on", "off"):
                    toggle.value = "value"

            mode.observe(self._safe(on_mode), names="value")
            coeff.observe(self._safe(on_coeff), names="value")
            remove.on_click(self._safe(lambda _, n=iv.name: self.remove_intervention(n)))
            row = W.HBox([enabled, mode, coeff, remove])
            row.add_class("lmscope-intervention")
            rows.append(row)
        if not rows:
            rows = [W.HTML("<i>No interventions: the model runs unchanged.</i>")]
        self.interventions_box.children = rows

    # -- search ------------------------------------------------------------------------------------
    def run_search(self) -> None:
        W = self.W
        if self.search_engine is None:
            raise ValueError("Search needs the projection index: start the app with DebuggerApp.from_model(view, tokenizer).")
        query = self.search_box.value
        hits = self.search_engine.search(query, limit=20)
        if not hits:
            self.search_results.children = [W.HTML(f"<i>No value has {esc(query)!s} among its top tokens.</i>")]
            return
        buttons = []
        for h in hits:
            matched = ", ".join(f"{t} #{r}" for t, r in h.matched[:3])
            b = W.Button(description=f"{h.name}{' ' + h.annotation if h.annotation else ''}: {matched}"[:48],
                         tooltip=f"score {h.score:.2f}", layout=W.Layout(width="auto"))
            b.add_class("lmscope-hit")
            b.on_click(self._safe(lambda _, n=h.name: self.show_value(n)))
            buttons.append(b)
        self.search_results.children = [W.HBox(buttons, layout=W.Layout(flex_flow="row wrap"))]
        self.show_message(f"{len(hits)} values for {query!r}; click one for details.")

    # -- annotations ------------------------------------------------------------------------------
    def save_annotation(self, text: str) -> None:
        if self.annotations is None:
            raise ValueError("This app has no annotations store: start it with DebuggerApp.from_model.")
        name, label = self.annotations.add(text)
        self.show_message(f"Saved {name} = {label}.")
        self._show_annotations()
        if self.selected == name:
            self.show_value(name)
        self._retrace()

    def _show_annotations(self) -> None:
        if self.annotations is None or not len(self.annotations):
            self.annotation_list.value = "<i>No named values yet.</i>"
            return
        self.annotation_list.value = " · ".join(f"<b>{esc(n)}</b> = {esc(l)}" for n, l in self.annotations.items())
