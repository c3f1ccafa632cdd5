"""The debugger app's attribution, patching and session panels (parts of :class:`DebuggerApp`).

* :class:`AttributionPanel`: the exact direct logit attribution of a token (default: the model's
  prediction) at the app's position, as bar charts (per layer; top heads and values), and that
  token's logit-lens probability across layers; the app's interventions are active.
* :class:`PatchingPanel`: activation patching of a corrupted prompt of the same length, heatmaps
  of the recovered fraction per (layer, position) for the residual stream, attention and FF outputs.
* :class:`SessionPanel`: save the session (prompt, position, interventions, names, trace) to a
  JSON file and load one back; a file that does not fit changes nothing.

Every action goes through the app's ``_safe`` wrapper: errors become a message, never a traceback.
"""

from __future__ import annotations

from lmscope.debugger.dla import direct_logit_attribution
from lmscope.debugger.figures import plot_dla, plot_lens_probability, plot_patching
from lmscope.debugger.patching import activation_patching
from lmscope.debugger.sessions import Session, export, load_session, save_session
from lmscope.display import esc


def _show(box, *figures) -> None:
    """Show ``figures`` in ``box`` (a VBox) as PNG images, replacing what it showed."""
    import io

    import ipywidgets as W
    import matplotlib.pyplot as plt

    images = []
    for fig in figures:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        images.append(W.Image(value=buf.getvalue(), format="png", layout=W.Layout(max_width="100%")))
    box.children = images


def _token(dbg, text: str, what: str) -> int | None:
    """A single-token text -> id (None for an empty box); the error names the box."""
    if not text:
        return None
    try:
        return dbg.token_id(text)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None


class AttributionPanel:
    """Direct logit attribution of one token at the app's position."""

    def __init__(self, app):
        W = app.W
        self.app = app
        self.target = app.cls(W.Text(placeholder="token, e.g. ' Paris' (empty: the prediction)",
                                     layout=W.Layout(width="260px")), "dla-target")
        self.foil = app.cls(W.Text(placeholder="minus token (optional)", layout=W.Layout(width="200px")), "dla-foil")
        self.button = app.cls(W.Button(description="Attribute", icon="bar-chart"), "attribute")
        self.summary = app.cls(W.HTML(), "attribution")
        self.plot = app.cls(W.VBox(), "attribution-plot")
        self.last = None
        self.button.on_click(app._safe(lambda _: self.run()))
        self.widget = W.VBox([W.HBox([self.target, self.foil, self.button]), self.summary, self.plot])

    def run(self):
        app, dbg = self.app, self.app.debugger
        ids = dbg.encode(app.prompt.value)
        pos = dbg._check_position(ids, app.position.value)
        target = _token(dbg, self.target.value, "token box")
        foil = _token(dbg, self.foil.value, "minus-token box")
        with dbg.intervene(app.interventions, ids, pos):
            attr = direct_logit_attribution(dbg.view, ids[0], target, foil, positions=[pos],
                                            tokens=dbg.token_texts(ids[0].tolist()))
        self.last = attr
        token = dbg.token_texts([attr.targets[0]])[0]
        what = f"logit({token})" + (f" - logit({dbg.token_texts([foil])[0]})" if foil is not None else "")
        lens = dbg.lens_probability(ids, attr.targets[0], pos, app.interventions).numpy()
        _show(self.plot, plot_dla(attr, pos, what=what), plot_lens_probability(lens, token))
        top = ", ".join(f"{esc(n)} {v:+.2f}" for n, v in attr.top(pos, n=6))
        self.summary.value = (f"<b>{esc(what)}</b> at position {pos} = {float(attr.logit[0]):.3f} "
                              f"(sum of the parts {float(attr.total()[0]):.3f}); largest parts: {top}")
        return attr


class PatchingPanel:
    """Activation patching of a corrupted prompt (same length) with activations of the app's prompt."""

    def __init__(self, app):
        W = app.W
        self.app = app
        self.corrupted = app.cls(W.Text(placeholder="corrupted prompt, same number of tokens",
                                        layout=W.Layout(width="420px")), "corrupted")
        self.answer = app.cls(W.Text(placeholder="answer (empty: clean prediction)", layout=W.Layout(width="220px")),
                              "patch-answer")
        self.button = app.cls(W.Button(description="Patch", icon="th"), "patch")
        self.summary = app.cls(W.HTML(), "patching")
        self.plot = app.cls(W.VBox(), "patching-plot")
        self.last = None
        self.button.on_click(app._safe(lambda _: self.run()))
        self.widget = W.VBox([W.HBox([self.corrupted, self.answer, self.button]), self.summary, self.plot])

    def run(self):
        app, dbg = self.app, self.app.debugger
        if not self.corrupted.value.strip():
            raise ValueError("The corrupted prompt is empty: type a prompt of the same length with another subject.")
        clean, corrupted = dbg.encode(app.prompt.value)[0], dbg.encode(self.corrupted.value)[0]
        if clean.shape != corrupted.shape:
            raise ValueError(f"The corrupted prompt has {corrupted.shape[0]} tokens and the prompt {clean.shape[0]}: "
                             "patching needs prompts of the same length (reword the corrupted prompt).")
        target = _token(dbg, self.answer.value, "answer box")
        if target is None:
            target = int(dbg.logits(clean)[-1].argmax())
        foil = int(dbg.logits(corrupted)[-1].argmax())
        metric = "prob" if foil == target else "logit_diff"
        app.show_message("patching… (one batched run per position)")
        grids = activation_patching(dbg.view, clean, corrupted, target=target, foil=foil, metric=metric,
                                    tokens=dbg.token_texts(clean.tolist()))
        self.last = grids
        names = dbg.token_texts([target, foil])
        what = f"P({names[0]})" if metric == "prob" else f"logit({names[0]}) - logit({names[1]})"
        _show(self.plot, plot_patching(grids, f"recovered fraction of {what}"))
        g = grids["resid_pre"]
        self.summary.value = f"<b>{esc(what)}</b>: clean {g.clean:.3f}, corrupted {g.corrupted:.3f}"
        app.show_message("")
        return grids


class SessionPanel:
    """Save and load the app's session as a JSON file; export the last trace, attribution or grids."""

    def __init__(self, app):
        W = app.W
        self.app = app
        self.path = app.cls(W.Text(value="debugger-session.json", layout=W.Layout(width="320px")), "session-path")
        self.save_button = app.cls(W.Button(description="Save session", icon="save"), "session-save")
        self.load_button = app.cls(W.Button(description="Load session", icon="folder-open"), "session-load")
        self.export_button = app.cls(W.Button(description="Export (.json/.csv)", icon="download"), "export")
        self.save_button.on_click(app._safe(lambda _: self.save()))
        self.load_button.on_click(app._safe(lambda _: self.load()))
        self.export_button.on_click(app._safe(lambda _: self.export()))
        self.widget = W.HBox([self.path, self.save_button, self.load_button, self.export_button])

    def session(self) -> Session:
        app = self.app
        names = dict(app.annotations.items()) if app.annotations is not None else {}
        return Session(app.view.name, app.prompt.value, int(app.position.value), list(app.interventions), names,
                       app.last_trace)

    def save(self):
        path = save_session(self.session(), self.path.value)
        self.app.show_message(f"Saved the session to {path}.")
        return path

    def load(self) -> Session:
        app = self.app
        cfg = app.view.cfg
        s = load_session(self.path.value, model=app.view.name, n_layers=cfg.n_layers, d_ff=cfg.d_ff)
        # the file is valid: only now does anything of the current session change
        app.prompt.value, app.position.value = s.prompt, s.position
        app.interventions = list(s.interventions)
        if app.annotations is not None:
            for name, label in s.value_names.items():
                app.annotations.set(name, label)
            app._show_annotations()
        app._show_interventions()
        if s.trace is not None:
            app.run_trace()
        app.show_message(f"Loaded the session from {self.path.value}.")
        return s

    def export(self):
        """Export the latest result to the path's folder: the trace, attribution and grids that exist."""
        app = self.app
        from pathlib import Path

        base = Path(self.path.value)
        stem = base.with_suffix("")
        fmt = base.suffix.lower() if base.suffix.lower() in (".json", ".csv") else ".json"
        done = []
        for tag, thing in (("trace", app.last_trace), ("attribution", app.attribution.last),
                           ("patching", app.patching.last)):
            if thing is not None:
                done.append(str(export(thing, f"{stem}-{tag}{fmt}")))
        if not done:
            raise ValueError("Nothing to export yet: trace, attribute or patch first.")
        app.show_message("Exported " + ", ".join(done) + ".")
        return done
