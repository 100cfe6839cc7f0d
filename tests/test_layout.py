"""The package's layout rules (issue #20), checked from the source so they cannot quietly erode.

- No import cycle among interp's modules. Every import is read from the AST, function-level ones
  included (a lazy import hides a cycle, it does not remove it); importing ``a.b.c`` also imports the
  packages ``a.b`` and ``a`` (their ``__init__``), so those count as edges too. Only imports under
  ``if TYPE_CHECKING:`` are exempt.
- Only ``interp/hooks/`` registers torch hooks.
- Every public name that the README, the docs or the notebooks use stays importable, old module
  paths included.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "interp"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(name: str) -> bool:
    return (ROOT / Path(*name.split(".")) / "__init__.py").exists()


def _resolve(name: str, modules: set[str]) -> str | None:
    """The interp module ``name`` refers to: itself, or the module holding the attribute it names."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def import_graph() -> dict[str, set[str]]:
    """module -> the interp modules it imports (package ``__init__``s of the imported module included)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        exempt = _type_checking_lines(tree)
        targets: set[str] = set()
        own_package = name if _is_package(name) else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in exempt:
                continue
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = own_package.split(".")
                    base = base[: len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                wanted = [module] + [f"{module}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in wanted:
                if not target.startswith("interp"):
                    continue
                resolved = _resolve(target, modules)
                if resolved is None:
                    continue
                # Importing a.b.c runs a/__init__ and a/b/__init__ first: a package imported from outside it.
                parts = resolved.split(".")
                for i in range(1, len(parts) + 1):
                    ancestor = ".".join(parts[:i])
                    if ancestor in modules and not name.startswith(ancestor + ".") and ancestor != name:
                        targets.add(ancestor)
        graph[name] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_cycle_finder_sees_a_lazy_cycle():
    graph = {"interp.a": {"interp.b"}, "interp.b": {"interp.c"}, "interp.c": {"interp.a"}, "interp.d": {"interp.a"}}
    assert find_cycles(graph) == [["interp.a", "interp.b", "interp.c"]]


def test_no_import_cycles_among_interp_modules():
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles (move the shared piece down a layer):\n" + "\n".join(" <-> ".join(c) for c in cycles)


HOOK_CALLS = re.compile(r"\.register_(forward_hook|forward_pre_hook|full_backward_hook|full_backward_pre_hook|hook)\(")


def test_only_the_hooks_package_registers_torch_hooks():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path.parent.name != "hooks"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if HOOK_CALLS.search(line)
    ]
    assert offenders == [], "register torch hooks through interp.hooks (e.g. interp.hooks.modules.module_hooks)"


# Public names: each (module, names) the README, docs/ or notebooks import, old paths included.
PUBLIC = {
    "interp": ["load", "scan", "write_scan", "load_scan", "write_report", "HookedModel", "ActivationCache", "ModelSpec",
               "ScanResult", "ScanSettings", "ScanReport", "CircuitReport", "InterpError", "BUILTIN_MODELS", "DEFAULT_MODEL",
               "AttentionStats", "StatsConfig", "attention_with_stats", "ANALYSES", "entropy_scores", "sink_scores",
               "max_attention_scores", "SAE", "load_sae", "feature_attribution", "logit_lens", "patchscope",
               "steering_vector"],
    "interp.saes": ["SAE", "load_sae", "from_saelens"],
    "interp.saes.attribution": ["feature_attribution"],
    "interp.analyses": ["activation_patching", "attribution_patching", "causal_trace", "subject_knockout_sweep", "to_rome",
                        "mass_outside", "retrieval_ablation_check", "retrieval_scores", "streaming_head_mask",
                        "streaming_scores", "token_role_scores", "composition_scores", "head_frame", "kv_head_table",
                        "attention_knockout", "average_traces", "head_ablation_scores", "joint_ablation"],
    "interp.causal": ["activation_patching", "attribution_patching", "causal_trace", "attention_knockout", "logit_diff",
                      "patchscope", "steering_vector"],
    "interp.circuits": ["IOI_TEMPLATES", "CircuitGraph", "PromptPairs", "edge_attribution", "evaluate_circuits",
                        "ioi_task", "patch_edges", "top_n_mask", "read_pairs", "faithfulness_curve", "area_under_curve",
                        "read_mib_scores", "write_mib_scores", "MIB_FRACTIONS", "mcqa_task", "arithmetic_task"],
    "interp.circuits.dla": ["direct_logit_attribution", "logit_lens"],
    "interp.report": ["head_table", "write_report", "load_heads", "ROLE_RULES", "ScanReport", "CircuitReport"],
    "interp.kernels": ["StatsConfig", "attention_with_stats"],
    "interp.hooks": ["HookedModel", "hook_name", "ArchitectureSpec", "discover"],
    "interp.memory": ["plan_scan", "sweep_batch_rows", "parse_size"],
    "interp.numerics": ["first_nonfinite"],
    "interp.distributed": ["world", "shard", "shard_batches", "all_reduce_sum", "merge_owned", "is_writer", "rank_device",
                           "rank_gpus", "rank_max_memory", "alone"],
    "interp.scanning": ["scan", "ScanResult", "write_scan", "load_scan", "head_table", "load_heads"],
    # old module paths (interp <= 0.1), resolved by interp._moved
    "interp.probes": ["natural_text_tokens", "default_probes"],
    "interp.needles": ["needle_grid", "needle_sample"],
    "interp.loading": ["gguf_as_hf_folder", "load"],
    "interp.builtin_models": ["resolve_builtin", "BUILTIN_MODELS"],
    "interp.analyses.streaming": ["kv_head_table"],
    "interp.analyses.head_stats": ["head_frame"],
    "interp.analyses.composition": ["composition_scores"],
    "interp.analyses.causal_tracing": ["causal_trace"],
    "interp.analyses.activation_patching": ["activation_patching"],
    "interp.hooks.replay": ["record"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_stay_importable(module):
    imported = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(imported, name)]
    assert missing == []


def test_old_module_paths_are_the_new_modules_and_keep_functions_in_place():
    code = (
        "import sys, interp.analyses as a, interp.causal.patching as new\n"
        "import interp.analyses.activation_patching\n"
        "from interp.analyses.attention_knockout import attention_knockout\n"
        "assert sys.modules['interp.analyses.activation_patching'] is new and new.__spec__.name == new.__name__\n"
        "assert callable(a.activation_patching) and callable(a.attention_knockout)\n"
        "import interp; assert callable(interp.scan) and callable(interp.analyses.causal_trace)\n"
        "print('ok')"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.stdout.strip() == "ok", run.stderr[-2000:]


def test_readme_is_a_landing_page_and_its_doc_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 250
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).exists(), target


def test_the_torch_free_name_lists_match_their_registries():
    from interp.catalog import METRIC_NAMES, TASK_NAMES
    from interp.causal.metrics import METRICS
    from interp.circuits.tasks import TASKS

    assert list(TASK_NAMES) == list(TASKS) and list(METRIC_NAMES) == list(METRICS)
