"""The house rules, read from the code's imports with ast (function-level imports count too):

- no module in videdit/stages/ imports another stage;
- nothing but the stage wiring (videdit.wiring), videdit.pipeline and videdit.engines imports a stage;
- no import cycle among videdit's modules;
- networks know nothing of videos: videdit.networks imports no stage, pipeline, records or io;
- nothing in videdit imports the compatibility re-exports of split modules (videdit.ops.native, videdit.io.video).
- run-folder file names are spelled in videdit/layout.py only.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "videdit"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the videdit modules it imports (a name imported from a package resolves to the
    submodule when one of that name exists, else to the package)."""
    modules = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        base_parts = name.split(".") if is_package else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parent = base_parts[: len(base_parts) - node.level + 1]
                    base = ".".join(parent + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # `from pkg import sub` uses the submodule; `from pkg import name` uses pkg itself.
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
        resolved = set()
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                resolved.add(target)
        graph[name] = resolved
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components




STAGE_IMPORTERS = ("videdit.wiring", "videdit.pipeline")


def is_stage(module: str) -> bool:
    return module.startswith("videdit.stages.")


def stage_rule_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for importer, targets in graph.items():
        for target in targets:
            if not is_stage(target):
                continue
            allowed = importer in STAGE_IMPORTERS or importer.startswith("videdit.engines") or importer == "videdit.stages"
            if is_stage(importer) or not allowed:
                bad.append(f"{importer} -> {target}")
    return sorted(bad)


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_no_stage_imports_a_stage_and_only_the_wiring_pipeline_and_engines_import_stages(graph):
    assert stage_rule_violations(graph) == []


def test_no_import_cycles(graph):
    assert find_cycles(graph) == []


def test_networks_know_nothing_of_videos(graph):
    for module, targets in graph.items():
        if module.startswith("videdit.networks"):
            bad = [t for t in targets if t.startswith(("videdit.stages", "videdit.pipeline", "videdit.records",
                                                       "videdit.io", "videdit.engines"))]
            assert bad == [], f"{module} imports {bad}"


# Modules that only re-export the names of a module split by job, for code outside videdit.
COMPATIBILITY_MODULES = ("videdit.ops.native", "videdit.io.video")


def test_videdit_imports_split_modules_from_their_homes(graph):
    assert sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                  if t in COMPATIBILITY_MODULES) == []


def test_split_modules_still_export_the_names_they_held():
    """Code outside videdit keeps working: every public name of io/video.py and ops/native.py before the
    split (but UpfirdnPlan, plan_upfirdn2d and taps_xy, merged into _params.Resample2d / filter_taps)."""
    import importlib

    held = {
        "videdit.io.video": "AudioInfo DEFAULT_IMAGE_FOLDER_FPS DecodeProblem EncoderSettings Frame IMAGE_SUFFIXES "
                            "ResolvedEncoder VideoInfo VideoReader VideoWriter X264_FRAME_THREADS frame_to_rgb "
                            "list_images probe_video read_frames read_image resolve_encoder",
        "videdit.ops.native": "ACTIVATION_IDS BuildError CPU_EXTENSION CUDA_EXTENSION CUDA_OPS CpuAutoSelect "
                              "DEFAULT_BUILD_TIMEOUT_S DEFAULT_CUDA_ARCHS ExtensionSpec FusedPlan LOG_TAIL_LINES "
                              "SOURCE_DIR bias_act_cuda build build_dir build_state build_timeout_s cache_root "
                              "correlation_taps cpu_auto_selector cpu_module cpu_module_if_built cpu_supports "
                              "cuda_arch_list cuda_module cuda_self_check cuda_supports device_name "
                              "filtered_lrelu_cpu filtered_lrelu_cuda flipped import_module load plan_filtered_lrelu "
                              "prepare_fused self_check_path upfirdn2d_cuda",
    }
    for module, names in held.items():
        assert [n for n in names.split() if not hasattr(importlib.import_module(module), n)] == [], module


def test_the_checker_sees_violations(tmp_path):
    """The checks above can fail: a fake package with a stage importing a stage (inside a function),
    a library importing a stage, and a two-module cycle."""
    root = tmp_path / "videdit"
    (root / "stages").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "stages" / "__init__.py").write_text("")
    (root / "stages" / "a.py").write_text("def f():\n    from videdit.stages import b\n")
    (root / "stages" / "b.py").write_text("from . import a\n")
    (root / "lib.py").write_text("import videdit.stages.a\nfrom videdit import other\n")
    (root / "other.py").write_text("from videdit.lib import x\n")
    g = import_graph(root)
    assert stage_rule_violations(g) == ["videdit.lib -> videdit.stages.a", "videdit.stages.a -> videdit.stages.b",
                                        "videdit.stages.b -> videdit.stages.a"]
    assert sorted(find_cycles(g)) == [["videdit.lib", "videdit.other"], ["videdit.stages.a", "videdit.stages.b"]]


# --------------------------------------------------------------------------------------------------
# Run-folder names live in videdit/layout.py only


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of a module, its classes and functions (prose, not code)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def _fstring_text(node: ast.JoinedStr) -> str:
    """An f-string's text with `{}` (or `{:SPEC}`) where its values go."""
    parts = []
    for value in node.values:
        if isinstance(value, ast.Constant):
            parts.append(value.value)
        elif value.format_spec is not None:
            parts.append("{:" + _fstring_text(value.format_spec) + "}")
        else:
            parts.append("{}")
    return "".join(parts)


def string_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string literal that is not a docstring; an f-string is one literal (see
    _fstring_text)."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            out.append((node.lineno, _fstring_text(node)))
            skip.update(id(v) for v in node.values)
            skip.update(id(v) for f in node.values if isinstance(f, ast.FormattedValue) and f.format_spec
                        for v in f.format_spec.values)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            out.append((node.lineno, node.value))
    return sorted(out)


def run_folder_names(layout_module) -> tuple[set[str], set[str]]:
    """(file names, name templates with `{}` for the key) of the run folder, as videdit/layout.py spells them:
    its public string constants that name a file (they hold a dot), the first frame's name, and what its
    name functions make of a key."""
    names = {v for k, v in vars(layout_module).items() if isinstance(v, str) and not k.startswith("_") and "." in v}
    names.add(layout_module.frame_name(0))
    templates = {layout_module.latents_name("{}"), layout_module.styles_name("{}"),
                 layout_module.stitched_generator_name("{}"), layout_module.render_video_name("{}"),
                 layout_module.composite_video_name("{}"), layout_module.published_name("{}", "{}")}
    return names, templates


def naming_violations(source: str, names: set[str], templates: set[str]) -> list[str]:
    """'line: literal' for each literal that spells a run-folder file name (as a whole word) or fills a name
    template (`{}` matching a value, or `*` in a glob pattern)."""
    import re

    words = [re.compile(r"(?<![\w.])" + re.escape(name) + r"(?![\w])") for name in names]
    shapes = [re.compile(re.escape(t).replace(r"\{\}", r"(\{\}|\*)")) for t in templates]
    bad = []
    for line, text in string_literals(source):
        if any(w.search(text) for w in words) or any(s.search(text) for s in shapes):
            bad.append(f"{line}: {text!r}")
    return bad


def test_run_folder_names_are_spelled_in_layout_only():
    from videdit import layout

    names, templates = run_folder_names(layout)
    assert {"render.json", "tracks.key", "manifest.json", ".digests.json", "latents_{}.npy"} <= names | templates
    bad = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "layout.py":
            continue
        found = naming_violations(path.read_text(), names, templates)
        if found:
            bad[str(path.relative_to(PACKAGE))] = found
    assert bad == {}, "spell these with videdit.layout's names:\n" + "\n".join(f"{k}: {v}" for k, v in bad.items())


def test_the_naming_check_sees_violations():
    from videdit import layout

    names, templates = run_folder_names(layout)
    source = '''"""Docstrings may name render.json."""
import json
a = root / "tune.json"
b = f"{run_dir / 'log.txt'}"
c = folder.glob("latents_*.npy")
d = out / f"latents_{key}.npy"
e = "render.jsonx", "my.lock", "tune"
f = f"{stem}.{key}.mp4"
g = crops / f"{i:06d}.png", f"{x:.2f}"
'''
    assert [v.split(":")[0] for v in naming_violations(source, names, templates)] == ["3", "4", "5", "6", "8", "9"]
