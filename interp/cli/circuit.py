"""``interp circuit``: edge-attribution circuit discovery from the command line.

Hook it into the main app with ``register_commands(app)``. Writes edges.csv/parquet, nodes.csv,
circuit.json and circuit.html (plus logit_lens.csv, faithfulness.csv, verification.csv, mib_scores.json) into
``--out``, staged in a temporary folder next to it and renamed into place only when complete.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from interp.models.builtin import DEFAULT_MODEL
from interp.cli.causal import check_out, write_atomically
from interp.cli.common import DebugOption, DtypeOption, check_source, console, one_line_errors, quiet_loading, task_or_data
from interp.errors import InterpError


def register_commands(app: typer.Typer) -> None:
    @app.command("circuit")
    def circuit(
        model: Annotated[str, typer.Argument(help=f"alias ({DEFAULT_MODEL}), local HF folder, .gguf file, or hub id")] = DEFAULT_MODEL,
        task: Annotated[str | None, typer.Option(help="built-in task: ioi, greater_than, induction, factual, mcqa, arithmetic, arithmetic_subtraction")] = None,
        data: Annotated[Path | None, typer.Option(help="prompt-pair dataset (.jsonl, .csv, .parquet), or a MIB dataset file, instead of --task")] = None,
        n: Annotated[int, typer.Option("--n", "-n", help="prompt pairs to generate (or the first N rows of --data); -n under torchrun, whose own flags shadow --n")] = 64,
        out: Annotated[Path, typer.Option(help="output folder")] = Path("interp-out/circuit"),
        method: Annotated[str, typer.Option(help="eap, eap-ig (= MIB's eap-ig-inputs), eap-ig-activations, clean-corrupted or exact (MIB's methods)")] = "eap-ig",
        steps: Annotated[int, typer.Option(help="interpolation steps of eap-ig and eap-ig-activations")] = 5,
        force_exact: Annotated[bool, typer.Option("--force-exact", help="run --method exact even above its limit of single-prompt forwards")] = False,
        metric: Annotated[str, typer.Option(help="logit_diff, prob or kl")] = "logit_diff",
        edges: Annotated[int | None, typer.Option(help="circuit size (top edges before pruning) [default: smallest reaching 0.8 faithfulness]")] = None,
        selection: Annotated[str, typer.Option(help="top: the largest |score| edges; greedy: grown from the logits, every edge on a path to them")] = "top",
        verify: Annotated[int, typer.Option(help="top edges to check by exact single-edge patching")] = 20,
        evaluate: Annotated[Path | None, typer.Option(help="evaluate this MIB edge-score JSON (Graph.to_json) instead of scoring edges")] = None,
        ungroup_kv: Annotated[bool, typer.Option("--ungroup-kv", help="GQA models: give every query head its own k and v input edges, MIB's graph (SmolLM2-135M: 123,211 edges, not 70,651); no effect without GQA")] = False,
        counterfactual: Annotated[str | None, typer.Option(help="corruption: ioi abc (default) or s2_io_flip; mcqa symbol (default), answerPosition, randomLetter, answerPosition_randomLetter; arithmetic random (default), ones_op1, ones_op2, tens_op1, tens_op2; a MIB --data file: any NAME of its NAME_counterfactual columns")] = None,
        scan: Annotated[Path | None, typer.Option(help="scan folder whose head roles and scores go into nodes.csv")] = None,
        seed: Annotated[int, typer.Option(help="seed for generated tasks")] = 0,
        batch: Annotated[int, typer.Option(help="prompt pairs per forward pass")] = 16,
        device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto")] = "auto",
        dtype: DtypeOption = "float32",
        overwrite: Annotated[bool, typer.Option(help="replace a non-empty --out")] = False,
        debug: DebugOption = False,
    ) -> None:
        """Find the circuit behind a task: score every edge (EAP / EAP-IG), evaluate top-n circuits exactly, write files."""

        quiet_loading(debug)
        with one_line_errors(debug, interrupted=None):
            check_source(task, data)
            for flag, value in (("--n", n), ("--batch", batch), ("--steps", steps), ("--edges", edges)):
                if value is not None and value < 1:
                    raise InterpError(f"{flag} must be at least 1, got {value}")
            if verify < 0:
                raise InterpError(f"--verify must be 0 (no exact check) or more, got {verify}")
            from interp.catalog import METHODS, check_method

            try:
                method = check_method(method)
            except InterpError:
                raise InterpError(f"unknown --method {method!r}; use one of {', '.join(METHODS)} (eap-ig-inputs is eap-ig)") from None
            if force_exact and method != "exact":
                raise InterpError("--force-exact applies to --method exact only")
            from interp.catalog import METRIC_NAMES

            if metric not in METRIC_NAMES:
                raise InterpError(f"unknown --metric {metric!r}; use one of {', '.join(METRIC_NAMES)}")
            if selection not in ("top", "greedy"):
                raise InterpError(f"unknown --selection {selection!r}; use top or greedy")
            _check_counterfactual(counterfactual, task)
            if scan is not None and not scan.is_dir():
                raise InterpError(f"--scan {scan} is not a folder")
            if evaluate is not None:
                from interp.circuits.mib import check_mib_scores

                file_layers, file_heads = check_mib_scores(evaluate, ungroup_kv=ungroup_kv)  # one line before the model loads
            check_out(out, overwrite=overwrite)
            from interp.circuits.pipeline import discover_circuit, scan_roles
            from interp.causal.pairs import read_pairs

            pairs = read_pairs(data, counterfactual=counterfactual) if data is not None else None
            roles = scan_roles(scan) if scan is not None else None
            import interp
            from interp.distributed import is_writer, rank_device, shard_range

            writer = is_writer()  # under torchrun: rank 0 shows progress and writes; every rank computes its rows
            with console.status(f"loading {model}") if writer else nullcontext():
                hooked = interp.load(model, device=rank_device(device), dtype=dtype)
            if pairs is not None and pairs.meta.get("mib"):  # MIB's filter: rows this tokenizer can score
                pairs, dropped, reason = pairs.keep_usable(hooked, limit=n)
                if dropped and writer:
                    console.print(f"kept {len(pairs)} rows of {data.name}; dropped {dropped} this tokenizer cannot score "
                                  f"(first: {reason})")
            pairs = task_or_data(task, pairs, n, model=hooked, seed=seed, default_n=n,
                                 **({"counterfactual": counterfactual} if task is not None and counterfactual else {}))
            pairs.encode(hooked)  # one error line naming the row, before any long step
            if method == "exact" and not force_exact and evaluate is None:
                from interp.circuits.eap import check_exact_cost
                from interp.circuits.graph import CircuitGraph

                check_exact_cost(CircuitGraph.of(hooked, ungroup_kv), len(pairs))  # the model's graph size is known only now
            given = None
            if evaluate is not None:
                given = _file_scores(evaluate, hooked, metric, file_layers, file_heads, ungroup_kv)
            from interp.cli.progress import bars as progress_bars

            with progress_bars(console, enabled=writer) as bars:

                def step(description: str, total: int | None):
                    handle = bars.add_task(description, total=None if total is None else len(shard_range(total)))
                    return lambda k: bars.advance(handle, k)

                from interp.circuits.eap import EXACT_LIMIT

                result = discover_circuit(hooked, pairs, method=method, steps=steps, metric=metric, n_edges=edges,
                                          exact_limit=None if force_exact else EXACT_LIMIT,
                                          selection=selection, verify=verify, batch_size=batch, roles=roles, scores=given,
                                          progress=step, ungroup_kv=ungroup_kv)
            if writer:
                write_atomically(out, result.save, overwrite=overwrite)  # staged, then renamed into place
        if not writer:
            return
        summary = result.summary()
        c = summary["circuit"]
        console.print(
            f"clean {summary['clean_metric']:.3f}, corrupted {summary['corrupted_metric']:.3f}; circuit of {c['n_edges']} "
            f"edges ({c['n_edges'] / summary['n_graph_edges']:.2%} of {summary['n_graph_edges']}), faithfulness "
            f"{c['faithfulness']:.3f}; MIB CPR {summary['cpr']:.3f}, CMD {summary['cmd']:.3f}"
        )
        typer.echo(str(out))


def _check_counterfactual(counterfactual: str | None, task: str | None) -> None:
    """``--counterfactual`` checked against ``--task``'s corruptions, torch-free (a MIB file's columns are checked on reading)."""
    if counterfactual is None or task is None:
        return
    from interp.catalog import TASK_COUNTERFACTUALS

    choices = TASK_COUNTERFACTUALS.get(task.replace("-", "_"))
    if choices is None:
        raise InterpError(f"--counterfactual {counterfactual} applies to --task {', '.join(TASK_COUNTERFACTUALS)} "
                          f"or a MIB --data file; {task} has one corruption")
    if counterfactual not in choices:
        raise InterpError(f"unknown --counterfactual {counterfactual!r} for --task {task}; use {', '.join(choices)}")


def _file_scores(path: Path, model, metric: str, n_layers: int, n_heads: int, ungroup_kv: bool = False):
    """EdgeScores from an MIB file, refused in one line when the file is for another model's graph."""
    from interp.circuits.eap import EdgeScores
    from interp.circuits.graph import CircuitGraph
    from interp.circuits.mib import read_mib_scores

    graph = CircuitGraph.of(model, ungroup_kv)
    if (n_layers, n_heads) != (graph.n_layers, graph.n_heads):
        raise InterpError(f"--evaluate {path} is for {n_layers} layers x {n_heads} heads but {model.cfg.name} has "
                          f"{graph.n_layers} x {graph.n_heads}; score the same model")
    scores, _ = read_mib_scores(path, graph)
    return EdgeScores(graph, scores, method=f"file:{path.name}", steps=0, metric=metric, clean_metric=float("nan"),
                      corrupted_metric=float("nan"), n_prompts=0, extra={"source": str(path)})
