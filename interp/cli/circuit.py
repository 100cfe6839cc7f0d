"""``interp circuit``: edge-attribution circuit discovery from the command line.

Hook it into the main app with ``register_commands(app)``. Writes edges.csv/parquet, nodes.csv,
circuit.json and circuit.html (plus logit_lens.csv, faithfulness.csv, verification.csv, mib_scores.json) into
``--out``, staged in a temporary folder next to it and renamed into place only when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.models.builtin import DEFAULT_MODEL
from interp.cli.causal import check_out, write_atomically
from interp.cli.common import DebugOption, DtypeOption, check_source, console, fail, task_or_data
from interp.errors import InterpError


def register_commands(app: typer.Typer) -> None:
    @app.command("circuit")
    def circuit(
        model: Annotated[str, typer.Argument(help=f"alias ({DEFAULT_MODEL}), local HF folder, .gguf file, or hub id")] = DEFAULT_MODEL,
        task: Annotated[str | None, typer.Option(help="built-in task: ioi, greater_than, induction, factual")] = None,
        data: Annotated[Path | None, typer.Option(help="prompt-pair dataset (.jsonl, .csv, .parquet) instead of --task")] = None,
        n: Annotated[int, typer.Option(help="prompt pairs to generate (or the first N rows of --data)")] = 64,
        out: Annotated[Path, typer.Option(help="output folder")] = Path("interp-out/circuit"),
        method: Annotated[str, typer.Option(help="eap, eap-ig (= MIB's eap-ig-inputs), eap-ig-activations, clean-corrupted or exact (MIB's methods)")] = "eap-ig",
        steps: Annotated[int, typer.Option(help="interpolation steps of eap-ig and eap-ig-activations")] = 5,
        force_exact: Annotated[bool, typer.Option("--force-exact", help="run --method exact even above its limit of single-prompt forwards")] = False,
        metric: Annotated[str, typer.Option(help="logit_diff, prob or kl")] = "logit_diff",
        edges: Annotated[int | None, typer.Option(help="circuit size (top edges before pruning) [default: smallest reaching 0.8 faithfulness]")] = None,
        selection: Annotated[str, typer.Option(help="top: the largest |score| edges; greedy: grown from the logits, every edge on a path to them")] = "top",
        verify: Annotated[int, typer.Option(help="top edges to check by exact single-edge patching")] = 20,
        evaluate: Annotated[Path | None, typer.Option(help="evaluate this MIB edge-score JSON (Graph.to_json) instead of scoring edges")] = None,
        counterfactual: Annotated[str, typer.Option(help="IOI corruption: abc (two new names) or s2_io_flip (MIB's: S2 replaced by the IO)")] = "abc",
        scan: Annotated[Path | None, typer.Option(help="scan folder whose head roles and scores go into nodes.csv")] = None,
        seed: Annotated[int, typer.Option(help="seed for generated tasks")] = 0,
        batch: Annotated[int, typer.Option(help="prompt pairs per forward pass")] = 16,
        device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto")] = "auto",
        dtype: DtypeOption = "float32",
        overwrite: Annotated[bool, typer.Option(help="replace a non-empty --out")] = False,
        debug: DebugOption = False,
    ) -> None:
        """Find the circuit behind a task: score every edge (EAP / EAP-IG), evaluate top-n circuits exactly, write files."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        try:
            check_source(task, data)
            for flag, value in (("--n", n), ("--batch", batch), ("--steps", steps), ("--edges", edges)):
                if value is not None and value < 1:
                    raise InterpError(f"{flag} must be at least 1, got {value}")
            if verify < 0:
                raise InterpError(f"--verify must be 0 (no exact check) or more, got {verify}")
            from interp.circuits.eap import EXACT_LIMIT, METHODS, check_method

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
            from interp.circuits.tasks import IOI_COUNTERFACTUALS

            if counterfactual not in IOI_COUNTERFACTUALS:
                raise InterpError(f"unknown --counterfactual {counterfactual!r}; use {' or '.join(IOI_COUNTERFACTUALS)}")
            if counterfactual != "abc" and task != "ioi":
                raise InterpError(f"--counterfactual {counterfactual} applies to --task ioi only")
            if scan is not None and not scan.is_dir():
                raise InterpError(f"--scan {scan} is not a folder")
            if evaluate is not None:
                from interp.circuits.mib import check_mib_scores

                file_layers, file_heads = check_mib_scores(evaluate)  # one line before the model loads
            check_out(out, overwrite=overwrite)
            from interp.circuits.pipeline import discover_circuit, scan_roles
            from interp.causal.pairs import read_pairs

            pairs = read_pairs(data) if data is not None else None
            roles = scan_roles(scan) if scan is not None else None
            import interp

            with console.status(f"loading {model}"):
                hooked = interp.load(model, device=device, dtype=dtype)
            pairs = task_or_data(task, pairs, n, model=hooked, seed=seed, default_n=n,
                                 **({"counterfactual": counterfactual} if task == "ioi" else {}))
            pairs.encode(hooked)  # one error line naming the row, before any long step
            if method == "exact" and not force_exact and evaluate is None:
                from interp.circuits.eap import check_exact_cost
                from interp.circuits.graph import CircuitGraph

                check_exact_cost(CircuitGraph.of(hooked), len(pairs))  # the model's graph size is known only now
            given = None
            if evaluate is not None:
                given = _file_scores(evaluate, hooked, metric, file_layers, file_heads)
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, transient=False) as bars:

                def step(description: str, total: int | None):
                    handle = bars.add_task(description, total=total)
                    return lambda k: bars.advance(handle, k)

                result = discover_circuit(hooked, pairs, method=method, steps=steps, metric=metric, n_edges=edges,
                                          exact_limit=None if force_exact else EXACT_LIMIT,
                                          selection=selection, verify=verify, batch_size=batch, roles=roles, scores=given,
                                          progress=step)
            write_atomically(out, result.save, overwrite=overwrite)  # staged, then renamed into place
        except InterpError as error:
            fail(error, debug)
        except Exception as error:  # noqa: BLE001 - one line unless --debug
            fail(error, debug)
        summary = result.summary()
        c = summary["circuit"]
        console.print(
            f"clean {summary['clean_metric']:.3f}, corrupted {summary['corrupted_metric']:.3f}; circuit of {c['n_edges']} "
            f"edges ({c['n_edges'] / summary['n_graph_edges']:.2%} of {summary['n_graph_edges']}), faithfulness "
            f"{c['faithfulness']:.3f}; MIB CPR {summary['cpr']:.3f}, CMD {summary['cmd']:.3f}"
        )
        typer.echo(str(out))


def _file_scores(path: Path, model, metric: str, n_layers: int, n_heads: int):
    """EdgeScores from an MIB file, refused in one line when the file is for another model's graph."""
    from interp.circuits.eap import EdgeScores
    from interp.circuits.graph import CircuitGraph
    from interp.circuits.mib import read_mib_scores

    graph = CircuitGraph.of(model)
    if (n_layers, n_heads) != (graph.n_layers, graph.n_heads):
        raise InterpError(f"--evaluate {path} is for {n_layers} layers x {n_heads} heads but {model.cfg.name} has "
                          f"{graph.n_layers} x {graph.n_heads}; score the same model")
    scores, _ = read_mib_scores(path, graph)
    return EdgeScores(graph, scores, method=f"file:{path.name}", steps=0, metric=metric, clean_metric=float("nan"),
                      corrupted_metric=float("nan"), n_prompts=0, extra={"source": str(path)})
