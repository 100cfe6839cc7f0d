"""``interp steer``: a steering vector from two prompt files, swept over coefficients while generating.

Hook it into the main app with ``register_commands(app)``. Writes ``steering.csv``, ``steering.html``
(the continuations side by side) and ``steering.json`` into ``--out``, staged and renamed into place
when complete, as ``interp trace``/``patch`` do.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Annotated

import typer

from interp.cli.causal import DeviceOption, OverwriteOption, check_out, write_atomically
from interp.cli.common import DebugOption, DtypeOption, console, one_line_errors, quiet_loading
from interp.errors import InterpError
from interp.models.builtin import DEFAULT_MODEL

# The sites `HookedModel.steer` adds to (the model-free part of its check; layers are checked once it loads).
STEERABLE_SITES = ("hook_embed", "hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_post",
                   "attn.hook_z", "attn.hook_q", "attn.hook_result")


def read_prompt_file(path: Path, flag: str) -> list[str]:
    """Prompts from a .txt file (one per non-empty line) or a .jsonl file (a ``prompt`` field per line)."""
    if not path.is_file():
        raise InterpError(f"{flag} {path} does not exist or is not a file; give a .txt (one prompt per line) or .jsonl file")
    if path.suffix not in (".txt", ".jsonl"):
        raise InterpError(f"{flag} {path}: unknown file type {path.suffix!r}; use .txt (one prompt per line) or .jsonl (a prompt field)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InterpError(f"{flag} {path} cannot be read as UTF-8 text ({error})") from None
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix == ".txt":
            prompts.append(line)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise InterpError(f"{flag} {path} line {number} is not JSON; write one object per line, e.g. {{\"prompt\": \"...\"}}") from None
        prompt = record.get("prompt") if isinstance(record, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise InterpError(f"{flag} {path} line {number} has no non-empty \"prompt\" field")
        prompts.append(prompt)
    if not prompts:
        raise InterpError(f"{flag} {path} holds no prompts; write at least one (one per line)")
    return prompts


def parse_coeffs(text: str) -> list[float]:
    """``"-8,-4,0,4,8"`` -> floats; refuses empty lists, non-numbers and non-finite values."""
    try:
        coeffs = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InterpError(f"--coeffs must be comma-separated numbers, e.g. -8,-4,0,4,8; got {text!r}") from None
    if not coeffs or not all(math.isfinite(c) for c in coeffs):
        raise InterpError(f"--coeffs must list at least one finite number, e.g. -8,-4,0,4,8; got {text!r}")
    return coeffs


def check_hook_name(name: str) -> None:
    """Refuse a hook name ``steer`` cannot add to, without a model (layer numbers are checked after loading)."""
    from interp.hooks.points import GLOBAL_SITES, LAYER_SITES

    parts = name.split(".", 2)
    site = name if name in GLOBAL_SITES else (parts[2] if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() else None)
    if site not in LAYER_SITES + GLOBAL_SITES:
        raise InterpError(f"--name {name!r} is not a hook point; names look like blocks.6.hook_resid_post or blocks.6.attn.hook_z")
    if site not in STEERABLE_SITES:
        raise InterpError(f"--name {name}: steering adds to {', '.join(STEERABLE_SITES)}, not {site}")


def _page(prompt: str, name: str, rows: list[dict], answer: str | None) -> str:
    cards = []
    for row in rows:
        score = f"<div class='lp'>log p({html.escape(answer)}) = {row['answer_logprob']:.3f}</div>" if answer is not None else ""
        cards.append(
            f"<div class='card'><h3>coeff {row['coeff']:g}</h3>{score}"
            f"<p><span class='prompt'>{html.escape(prompt)}</span>{html.escape(row['continuation'])}</p></div>"
        )
    style = ("body{font-family:sans-serif;margin:1em}.row{display:flex;gap:1em;align-items:flex-start}"
             ".card{flex:1;border:1px solid #ccc;border-radius:6px;padding:.5em;white-space:pre-wrap}"
             ".prompt{color:#888}.lp{font-size:.9em;color:#336}")
    return (f"<html><head><meta charset='utf-8'><title>interp steer</title><style>{style}</style></head><body>"
            f"<h2>Steering at {html.escape(name)}</h2><div class='row'>{''.join(cards)}</div></body></html>")


def register_commands(app: typer.Typer) -> None:
    """Add ``steer`` to ``app``."""

    @app.command("steer")
    def steer(
        model: Annotated[str, typer.Argument(metavar="MODEL", help=f"alias ({DEFAULT_MODEL}), local HF folder, .gguf file, or hub id")],
        name: Annotated[str, typer.Option(metavar="HOOK", help="hook point to add the vector at, e.g. blocks.6.hook_resid_post")],
        positive: Annotated[Path, typer.Option(metavar="FILE", help="prompts showing the behaviour: .txt (one per line) or .jsonl (a prompt field)")],
        negative: Annotated[Path, typer.Option(metavar="FILE", help="prompts showing its opposite: .txt (one per line) or .jsonl (a prompt field)")],
        prompt: Annotated[str, typer.Option(metavar="TEXT", help="the prompt to continue under each coefficient")],
        out: Annotated[Path, typer.Option(metavar="DIR", help="output folder (steering.csv, steering.html, steering.json)")],
        coeffs: Annotated[str, typer.Option(metavar="LIST", help="comma-separated coefficients of the vector")] = "-8,-4,0,4,8",
        max_new_tokens: Annotated[int, typer.Option(metavar="N", help="tokens to generate (greedy)")] = 30,
        answer: Annotated[str | None, typer.Option(metavar="TEXT", help="single-token answer: its log-probability at the first generated position")] = None,
        position: Annotated[int, typer.Option(metavar="POS", help="token of each file prompt the vector is read at (-1: the last)")] = -1,
        device: DeviceOption = "auto",
        dtype: DtypeOption = "float32",
        overwrite: OverwriteOption = False,
        debug: DebugOption = False,
    ) -> None:
        """Contrastive activation addition: the mean activation difference at --name between the --positive
        and --negative prompts, added with each coefficient while the model continues --prompt.

        Prompt files: .txt with one prompt per line (empty lines skipped) or .jsonl with one object per
        line holding a "prompt" field. The vector is added at every position (prompt and new tokens);
        generation is greedy. steering.csv has one row per coefficient: coeff, continuation, and
        answer_logprob (the log-probability of --answer as the first new token) when --answer is given.
        """
        quiet_loading(debug)
        with one_line_errors(debug):
            check_hook_name(name)
            positives = read_prompt_file(positive, "--positive")
            negatives = read_prompt_file(negative, "--negative")
            chosen = parse_coeffs(coeffs)
            if not prompt.strip():
                raise InterpError("--prompt is empty; give the text to continue")
            if max_new_tokens < 1:
                raise InterpError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
            if answer is not None and not answer:
                raise InterpError("--answer is empty; give the answer text (e.g. ' Paris') or leave it out")
            check_out(out, overwrite=overwrite)
            import pandas as pd
            import torch

            import interp
            from interp.causal.common import answer_token

            hooked = interp.load(model, device=device, dtype=dtype)
            hooked.steering_shape(name)  # the layer exists in this model
            answer_id = answer_token(hooked, answer) if answer is not None else None
            vector = interp.steering_vector(hooked, positives, negatives, name, position=position)
            tokens = hooked.to_tokens(prompt)
            rows = []
            for coeff in chosen:
                with hooked.steer(name, vector, coeff=coeff):
                    output = hooked.generate(tokens, max_new_tokens=max_new_tokens, do_sample=False,
                                             return_dict_in_generate=True, output_logits=True)
                new = output.sequences[0, tokens.shape[1]:]
                row = {"coeff": coeff, "continuation": hooked.tokenizer.decode(new, skip_special_tokens=True)}
                if answer_id is not None:
                    row["answer_logprob"] = float(torch.log_softmax(output.logits[0][0].double(), -1)[answer_id])
                rows.append(row)
            frame = pd.DataFrame(rows)
            info = {"model": model, "name": name, "position": position, "prompt": prompt, "answer": answer,
                    "n_positive": len(positives), "n_negative": len(negatives), "vector_norm": float(vector.norm()),
                    "max_new_tokens": max_new_tokens, "coeffs": chosen}

            def write(folder: Path) -> None:
                frame.to_csv(folder / "steering.csv", index=False)
                (folder / "steering.html").write_text(_page(prompt, name, rows, answer), encoding="utf-8")
                (folder / "steering.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

            write_atomically(out, write, overwrite=overwrite)
        console.print(f"steered {len(chosen)} coefficients at {name} (vector norm {info['vector_norm']:.3g}); "
                      f"wrote {out / 'steering.csv'} and {out / 'steering.html'}")
        print(out)
