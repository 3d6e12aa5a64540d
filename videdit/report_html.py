"""Static pages of a run folder, for a browser: RUN/index.html (the outputs and the comparison playing, the eval
metrics and plots when present, the people sheet, the preview sheet, the settings) and RUN/preview/index.html.
Links are relative, so a run folder can be moved or served as it is; no time stamps, so the same run gives the
same bytes."""
from __future__ import annotations

import json
from html import escape
from os import PathLike
from pathlib import Path
from typing import Any

from videdit import layout
from videdit.fileio import atomic_write_text
from videdit.records_view import ViewFolder

STYLE = ("body{font-family:sans-serif;background:#181818;color:#eee;margin:1.5em}a{color:#8cf}"
         "video,img{max-width:100%;background:#000}section{margin-bottom:2em}pre{background:#222;padding:1em;"
         "overflow:auto;font-size:12px}td,th{padding:2px 10px;text-align:left}.grid{display:flex;flex-wrap:wrap;gap:1em}"
         ".grid figure{margin:0;max-width:48%}")


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n<h1>{escape(title)}</h1>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _write(path: Path, text: str) -> Path:
    """Write the page only when it changes: a cached rerun touches nothing in the run folder."""
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)
    return path


def _link(path: Path, base: Path) -> str:
    return escape(path.relative_to(base).as_posix(), quote=True)


def _video(path: Path, base: Path, caption: str) -> str:
    src = _link(path, base)
    return (f"<figure><figcaption><a href=\"{src}\">{escape(caption)}</a></figcaption>"
            f"<video src=\"{src}\" controls loop muted preload=\"metadata\"></video></figure>")


def _image(path: Path, base: Path, caption: str) -> str:
    src = _link(path, base)
    return f"<figure><figcaption>{escape(caption)}</figcaption><a href=\"{src}\"><img src=\"{src}\" alt=\"{escape(caption)}\"></a></figure>"


def _metrics_table(metrics: dict) -> str:
    """The scalar metrics per output as a table (nested dicts flattened to dotted names); the rest stays in the file."""
    rows = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key in value:
                walk(f"{prefix}.{key}" if prefix else str(key), value[key])
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append(f"<tr><td>{escape(prefix)}</td><td>{value:.4g}</td></tr>")

    walk("", metrics)
    return "<table>" + "".join(rows[:200]) + "</table>" if rows else ""


def write_run_page(run_dir: str | PathLike, title: str | None = None) -> Path:
    """RUN/index.html from what the run folder holds now: the final videos and the comparison at its top, the eval
    metrics and plots, the sheets, the settings. The run writes it, and `videdit eval` again with its metrics."""
    from videdit import records
    from videdit.errors import InputError

    view = ViewFolder(run_dir)
    base = view.root
    videos = sorted(p for p in base.iterdir() if p.is_file() and layout.video_stem(p.name) is not None)
    body = ["<section><h2>Outputs</h2><div class=\"grid\">"]
    body += [_video(p, base, f"{p.name}: the input and every output side by side") for p in videos
             if layout.is_compare_name(p.name)]
    body += [_video(p, base, p.name) for p in videos if not layout.is_compare_name(p.name)]
    body.append("</div></section>")
    try:
        metrics = records.load_metrics(base)
    except InputError:
        metrics = None
    plots = view.eval_plots()
    if metrics is not None or plots:
        body.append("<section><h2>Evaluation</h2>")
        if metrics is not None:
            body.append(_metrics_table(metrics))
            body.append(f"<p><a href=\"{_link(view.eval_dir / layout.METRICS, base)}\">{layout.METRICS}</a></p>")
        body.append("<div class=\"grid\">" + "".join(_image(p, base, p.name) for p in plots) + "</div></section>")
    else:
        body.append("<section><h2>Evaluation</h2><p>Not evaluated yet: run <code>videdit eval</code> on this folder "
                    "and reload.</p></section>")
    pictures = [(view.people_sheet, "people (videdit faces)"), (view.sheet, "preview (videdit preview)")]
    shown = [_image(p, base, caption) for p, caption in pictures if p.is_file()]
    if shown:
        body.append("<section><h2>Sheets</h2><div class=\"grid\">" + "".join(shown) + "</div></section>")
    if view.settings.is_file():
        body.append(f"<section><h2>Settings</h2><pre>{escape(view.settings.read_text())}</pre></section>")
    return _write(view.page, _page(title or f"videdit run {base.name}", body))


def write_preview_page(preview, settings: dict[str, Any]) -> Path:
    """RUN/preview/index.html for a videdit.preview.PreviewResult: the sheet, the key frames, the cost."""
    view = ViewFolder(preview.run_dir)
    base = view.preview
    rows = "".join(f"<tr><td>{frame}</td><td>{_shot_range(preview.shots, frame)}</td></tr>" for frame in preview.frames)
    body = [f"<p>{escape(preview.video.name)}: {len(preview.frames)} key frames of {preview.n_video_frames}; "
            f"rows: input, {escape(', '.join(k for k, _ in preview.rows))}.</p>",
            _image(preview.sheet, base, "contact sheet: one column per key frame"),
            f"<section><h2>Key frames</h2><table><tr><th>frame</th><th>shot</th></tr>{rows}</table></section>",
            f"<section><h2>Settings</h2><pre>{escape(json.dumps(settings, indent=1, sort_keys=True, default=str))}"
            "</pre></section>"]
    return _write(view.preview_page, _page(f"preview of {preview.video.name}", body))


def _shot_range(shots, frame: int) -> str:
    for start, end in shots:
        if start <= frame < end:
            return f"{start}-{end - 1}"
    return "?"
