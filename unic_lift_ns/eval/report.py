"""The visual report of ``unic-lift-eval --report DIR`` (issue #30): one PNG per eval view and an ``index.html``.

Each view's PNG is a row of panels at the render's size (scaled up by a whole factor for small views): the RGB
render, the view's 2D instance mask (the training input; black = unlabelled), the decoded labels of every scored
decoding (the viewer's fixed palette, :func:`~unic_lift_ns.instance_codes.label_palette`) and, when the scene has
``gt/``, the ground truth (black = background). ``index.html`` shows the score table and every view with its PQ.

The report folder is new, empty, or one this module wrote before (its ``index.html`` starts with
:data:`REPORT_MARK`); files are written atomically without following links (:mod:`unic_lift_ns.safe_files`).
"""

from __future__ import annotations

import html
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from unic_lift_ns.data.label_maps import resize_label_map
from unic_lift_ns.eval.evaluate import RESULT_COLUMNS, EvalResult, result_cells
from unic_lift_ns.eval.panoptic import panoptic_maps
from unic_lift_ns.eval.rendered_views import check_writable_folder
from unic_lift_ns.instance_codes import label_palette
from unic_lift_ns.safe_files import is_ours, write_file

REPORT_MARK = b"<!DOCTYPE html>\n<!-- unic-lift-eval report -->\n"
"""How the report's index.html starts: a folder holding it is a report this module may write over."""
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
"""How every PNG file starts (inside a report folder, the view images are ours)."""
VIEWS = "views"
"""Sub-folder of the view images."""
MIN_PANEL_HEIGHT = 160
"""Views rendered smaller than this are scaled up by a whole factor (nearest) so that labels stay readable."""
CAPTION_HEIGHT = 14
"""Height in pixels of the caption strip above each panel."""


@dataclass(frozen=True)
class ReportView:
    """What one eval view's picture shows."""

    stem: str
    """Image file stem of the view."""
    rgb: np.ndarray
    """RGB render [H, W, 3] uint8; every other panel is shown at this size."""
    mask: Optional[np.ndarray]
    """The view's 2D instance mask (0 = unlabelled), None where the view has none."""
    decoded: Dict[str, np.ndarray]
    """Decoded instance labels [H, W] per decoding (its name, the panel's caption)."""
    gt: Optional[np.ndarray]
    """Ground-truth instance map (0 = background), None without ``gt/``."""
    pq: Dict[str, float]
    """PQ of this view alone per decoding, in [0, 1]; empty without ``gt/``."""


def check_report_folder(folder: Path, flag: str = "--report") -> None:
    """Raise before any rendering if ``folder`` cannot hold a report: a file in its place or above it, no
    permission, a link, or a folder with files this module did not write."""
    check_writable_folder(folder, flag)
    if os.path.islink(folder) or os.path.islink(folder / VIEWS):
        raise FileExistsError(f"{flag}: {folder} or its {VIEWS}/ is a link; pass a real folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    if not is_ours(folder / "index.html", REPORT_MARK):
        raise FileExistsError(
            f"{flag}: {folder} already holds files that are not a unic-lift-eval report; pass a new or empty folder"
        )
    if (folder / VIEWS).exists() and not (folder / VIEWS).is_dir():
        raise NotADirectoryError(f"{flag}: {folder / VIEWS} is a file, not the report's folder of view images")


def colour_labels(labels: np.ndarray, black: Optional[int] = None) -> np.ndarray:
    """[H, W] integer labels as [H, W, 3] uint8 palette colours; pixels labelled ``black`` are black."""
    labels_t = torch.from_numpy(np.asarray(labels, dtype=np.int64)).clamp_min(0)
    rgb = (label_palette(labels_t) * 255.0).round().to(torch.uint8).numpy()
    if black is not None:
        rgb[np.asarray(labels) == black] = 0
    return rgb


def view_image(view: ReportView) -> Image.Image:
    """The view's row of captioned panels (see the module docstring)."""
    height, width = view.rgb.shape[:2]

    def at_render_size(labels: np.ndarray) -> np.ndarray:
        return resize_label_map(torch.from_numpy(np.asarray(labels, dtype=np.int64)), height, width).numpy()

    panels = [("RGB render", view.rgb)]
    if view.mask is None:
        panels.append(("no 2D mask", np.full_like(view.rgb, 64)))
    else:
        panels.append(("2D mask", colour_labels(at_render_size(view.mask), black=0)))
    for name, labels in view.decoded.items():
        score = f" PQ {100 * view.pq[name]:.1f}" if name in view.pq and not math.isnan(view.pq[name]) else ""
        panels.append((f"{name}{score}", colour_labels(at_render_size(labels))))
    if view.gt is not None:
        panels.append(("ground truth", colour_labels(at_render_size(view.gt), black=0)))
    scale = max(1, math.ceil(MIN_PANEL_HEIGHT / height))
    panel_w, panel_h = width * scale, height * scale + CAPTION_HEIGHT
    canvas = Image.new("RGB", (panel_w * len(panels), panel_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for index, (caption, pixels) in enumerate(panels):
        image = Image.fromarray(np.ascontiguousarray(pixels)).resize((panel_w, height * scale), Image.NEAREST)
        canvas.paste(image, (index * panel_w, CAPTION_HEIGHT))
        draw.text((index * panel_w + 2, 1), caption, fill=(0, 0, 0))
    return canvas


def index_html(title: str, results: Mapping[str, EvalResult], views: Sequence[ReportView]) -> str:
    """The report's page: the score table, then every view's picture with its PQ per decoding."""
    header = "".join(f"<th>{html.escape(c)}</th>" for c in ("Method", *RESULT_COLUMNS))
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in (name, *result_cells(r))) + "</tr>\n"
        for name, r in results.items()
    )
    figures = []
    for view in views:
        scores = ", ".join(f"{html.escape(n)} PQ {100 * q:.1f}" for n, q in view.pq.items() if not math.isnan(q))
        caption = html.escape(view.stem) + (f": {scores}" if scores else "")
        source = html.escape(f"{VIEWS}/{view.stem}.png", quote=True)
        figures.append(f'<figure><img src="{source}" alt="{html.escape(view.stem, quote=True)}">'
                       f"<figcaption>{caption}</figcaption></figure>\n")  # fmt: skip
    style = ("body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}td,th{border:1px solid #aaa;"
             "padding:2px 6px;text-align:right}td:first-child{text-align:left}img{image-rendering:pixelated}")  # fmt: skip
    return (REPORT_MARK.decode() + f'<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{style}</style></head><body>\n<h1>{html.escape(title)}</h1>\n<table><tr>{header}</tr>\n{rows}"
            "</table>\n<p>Panels: RGB render, the view's 2D instance mask (black: unlabelled), the decoded instance "
            "labels of each decoding (the viewer's palette), and the ground truth (black: background) where the "
            f"scene has it. Qualities in percent.</p>\n{''.join(figures)}</body></html>\n")  # fmt: skip


def write_report(folder: Path, title: str, results: Mapping[str, EvalResult], views: Sequence[ReportView]) -> Path:
    """Write ``views/<stem>.png`` per view, then ``index.html``; returns the path of ``index.html``."""
    check_report_folder(folder)
    (folder / VIEWS).mkdir(parents=True, exist_ok=True)
    for view in views:
        buffer = io.BytesIO()
        view_image(view).save(buffer, format="PNG")
        write_file(folder / VIEWS / f"{view.stem}.png", lambda file: file.write(buffer.getvalue()), PNG_MAGIC)
    page = index_html(title, results, views).encode("utf8")
    return write_file(folder / "index.html", lambda file: file.write(page), REPORT_MARK)


def view_qualities(decoded: Sequence[np.ndarray], gt: Sequence[np.ndarray], semantics: Optional[Sequence[np.ndarray]],
                   gt_semantics: Sequence[np.ndarray]) -> List[float]:  # fmt: skip
    """PQ of each view on its own (at the ground truth's size), as PQ^scene scores a one-view scene."""
    qualities = []
    for index, (labels, target) in enumerate(zip(decoded, gt)):
        pred_sem = None if semantics is None else [semantics[index]]
        gt_sem = None if semantics is None else [gt_semantics[index]]
        qualities.append(panoptic_maps([labels], [target], pred_sem, gt_sem).scene_quality().pq)
    return qualities
