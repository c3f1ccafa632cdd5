"""Explorers that work in a static page: precomputed views switched by plain JavaScript.

A :class:`StaticExplorer` holds one HTML panel per combination of its controls' values
(drop-down menus) and a few lines of inline JavaScript that show the panel matching the
current choice. Nothing is loaded from anywhere: the page needs no kernel, no CDN and no
library, so it works offline and from any static file server. Elements with a ``data-tip``
attribute show that text in the explorer's info line on hover (or focus); a search box, when
asked for, hides the rows (``data-search``) of the shown panel that do not contain the query.

The study modules (``lmscope/<study>/explorer.py``, ``lmscope/core/lens_explorer.py``) compute
the panels; a notebook cell ends with the explorer object, which Jupyter displays as HTML.
"""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass, field
from html import escape

import numpy as np

SEP = "\u241f"  # joins control values into a panel key

_STYLE = """<style>
.lmx{border:1px solid #ccd;border-radius:6px;padding:8px 10px;margin:8px 0;max-width:100%;overflow-x:auto;
font-size:0.85em}.lmx-title{font-weight:600;margin-bottom:4px}.lmx-controls label{margin-right:14px}
.lmx-controls select,.lmx-controls input{margin-left:4px;font-size:1em}.lmx-info{min-height:1.4em;color:#234;
margin:4px 0;font-family:monospace;white-space:pre-wrap}.lmx table{border-collapse:collapse;display:table}
.lmx td,.lmx th{padding:1px 4px;border:1px solid #eee;white-space:nowrap;text-align:left}
.lmx td.lmx-c{font-family:monospace;font-size:0.9em;cursor:default}.lmx-note{color:#666}
.lmx-bar{display:inline-block;height:0.8em;vertical-align:middle}</style>"""

_SCRIPT = """<script>(function(){var root=document.getElementById(%(id)s);if(!root)return;
var sels=root.querySelectorAll('select[data-lmx]'),panels=root.querySelectorAll('.lmx-panel'),
info=root.querySelector('.lmx-info'),search=root.querySelector('input[data-lmx-search]'),
missing=root.querySelector('.lmx-missing');
function key(){return Array.prototype.map.call(sels,function(s){return s.value;}).join(%(sep)s);}
function filter(p){if(!search||!p)return;var q=search.value.trim().toLowerCase();
p.querySelectorAll('[data-search]').forEach(function(r){
r.style.display=(!q||r.getAttribute('data-search').toLowerCase().indexOf(q)>=0)?'':'none';});}
function show(){var k=key(),shown=null;panels.forEach(function(p){var on=p.getAttribute('data-key')===k;
p.hidden=!on;if(on)shown=p;});missing.hidden=!!shown;info.textContent=%(hint)s;filter(shown);}
sels.forEach(function(s){s.addEventListener('change',show);});
if(search)search.addEventListener('input',show);
function tip(e){var t=e.target.closest('[data-tip]');if(t&&root.contains(t))info.textContent=t.getAttribute('data-tip');}
root.addEventListener('mouseover',tip);root.addEventListener('focusin',tip);show();})();</script>"""


def _attr(text) -> str:
    return escape(str(text), quote=True)


@dataclass(repr=False)
class StaticExplorer:
    """Precomputed panels, one per combination of control values, switched in the page.

    ``controls`` maps each control's label to its values (strings, in menu order);
    ``panels`` maps a tuple of values (one per control, in order) to that view's HTML.
    A combination without a panel shows ``missing`` instead.
    """

    title: str
    controls: dict[str, list[str]]
    panels: dict[tuple[str, ...], str]
    hint: str = "hover a cell for details"
    search: str | None = None  # placeholder of a search box over the panels' data-search rows
    missing: str = "no precomputed view for this choice"
    element_id: str = field(default_factory=lambda: f"lmx-{uuid.uuid4().hex[:10]}")

    def __post_init__(self):
        if not self.controls:
            raise ValueError("StaticExplorer needs at least one control: controls={'label': [values]}")
        for label, values in self.controls.items():
            if not values:
                raise ValueError(f"control {label!r} has no values: give it at least one")
        n = len(self.controls)
        for combo in self.panels:
            if len(combo) != n:
                raise ValueError(f"panel key {combo!r} has {len(combo)} values; there are {n} controls "
                                 f"({', '.join(self.controls)})")

    @property
    def keys(self) -> list[tuple[str, ...]]:
        """Every combination of control values, in menu order."""
        return list(itertools.product(*self.controls.values()))

    def to_html(self) -> str:
        """The explorer as one self-contained HTML fragment (style, controls, panels, script)."""
        controls = "".join(
            f"<label>{escape(label)}<select data-lmx='{i}'>"
            + "".join(f"<option value='{_attr(v)}'>{escape(str(v))}</option>" for v in values)
            + "</select></label>" for i, (label, values) in enumerate(self.controls.items()))
        if self.search is not None:
            controls += f"<label>search<input data-lmx-search type='search' placeholder='{_attr(self.search)}'></label>"
        panels = "".join(f"<div class='lmx-panel' data-key='{_attr(SEP.join(map(str, combo)))}' hidden>{html}</div>"
                         for combo, html in self.panels.items())
        script = _SCRIPT % {"id": json.dumps(self.element_id), "sep": json.dumps(SEP), "hint": json.dumps(self.hint)}
        return (f"{_STYLE}<div class='lmx' id='{self.element_id}'><div class='lmx-title'>{escape(self.title)}</div>"
                f"<div class='lmx-controls'>{controls}</div><div class='lmx-info'>{escape(self.hint)}</div>"
                f"{panels}<div class='lmx-missing lmx-note' hidden>{escape(self.missing)}</div></div>{script}")

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:  # the plain-text fallback: short, not every panel again
        return f"StaticExplorer({self.title!r}: {len(self.panels)} precomputed views; open as HTML)"


# -- building blocks for panels ----------------------------------------------------------------------

def _colour(value: float, signed: bool) -> str:
    """Background for ``value`` in [0, 1] (blue), or in [-1, 1] (red negative, blue positive)."""
    v = float(np.clip(value, -1.0, 1.0))
    if signed and v < 0:
        return f"rgba(214,39,40,{-v:.2f})"
    return f"rgba(31,119,180,{abs(v):.2f})"


def heatmap(values, cells, tips, row_labels, col_labels, *, signed: bool = False,
            corner: str = "") -> str:
    """An HTML table coloured by ``values`` (rows, cols) in [0, 1] (or [-1, 1] with ``signed``).

    ``cells`` and ``tips`` are (rows, cols) nested lists of the text shown in a cell and of its
    hover text. Rows are drawn as given (put the last layer first for a lens).
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"values has shape {values.shape}; expected (len(row_labels), len(col_labels)) = "
                         f"({len(row_labels)}, {len(col_labels)})")
    head = f"<tr><th>{escape(corner)}</th>" + "".join(f"<th>{escape(str(c))}</th>" for c in col_labels) + "</tr>"
    body = []
    for r, label in enumerate(row_labels):
        tds = []
        for c in range(values.shape[1]):
            v = values[r, c]
            ink = "white" if abs(v) > 0.6 else "black"
            tds.append(f"<td class='lmx-c' tabindex='0' style='background:{_colour(v, signed)};color:{ink}' "
                       f"data-tip='{_attr(tips[r][c])}'>{escape(str(cells[r][c]))}</td>")
        body.append(f"<tr><th>{escape(str(label))}</th>{''.join(tds)}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def bar_rows(headers, rows, values, *, scale: float | None = None, search: list[str] | None = None) -> str:
    """A table of ``rows`` (lists of cell texts) with a bar for each row's value (signed: red < 0).

    ``search`` gives each row's searchable text (the rows a search box filters).
    """
    values = [float(v) for v in values]
    scale = scale or max([abs(v) for v in values] + [1e-12])
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers) + "<th></th>"
    body = []
    for i, (row, v) in enumerate(zip(rows, values)):
        width = 80 * min(1.0, abs(v) / scale)
        bar = f"<span class='lmx-bar' style='width:{width:.0f}px;background:{_colour(1.0 if v >= 0 else -1.0, True)}'></span>"
        attr = f" data-search='{_attr(search[i])}'" if search is not None else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + f"<td>{bar}</td></tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def token_list(tokens, probs=None, digits: int = 2) -> str:
    """``tokens`` as one line of readable quoted pieces, each with its probability if given."""
    if probs is None:
        return "  ".join(repr(t) for t in tokens)
    return "  ".join(f"{t!r} {p:.{digits}f}" for t, p in zip(tokens, probs))


def tip_table(headers, rows) -> str:
    """A table whose cells are ``(text, tip)`` pairs (``tip`` None for none); hover shows the tip."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = []
    for row in rows:
        tds = []
        for text, tip in row:
            attr = f" class='lmx-c' tabindex='0' data-tip='{_attr(tip)}'" if tip else ""
            tds.append(f"<td{attr}>{escape(str(text))}</td>")
        body.append(f"<tr>{''.join(tds)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"
