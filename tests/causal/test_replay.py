"""Sweeps that start at the patched block and token equal the plain full-forward path on every architecture.

The tiny models get peaked attention (query/key weights scaled up) so that a wrong position offset,
mask or rotary phase in the replay would move the metrics by far more than the 1e-5 tolerance.
"""


import pytest
import torch
from causal_helpers import naive_patch
from tiny_models import ARCHITECTURE_NAMES, VOCAB, tiny_config, tiny_model
from transformers import AutoModelForCausalLM

from interp.causal.patching import SITES, activation_patching
from interp.causal.knockout import subject_knockout_sweep
from interp.causal.tracing import causal_trace
from interp.analyses.head_ablation import head_ablation, joint_ablation
from interp.errors import InterpError
from interp.hooks import HookedModel
from interp.hooks.replay import attention_window, plan_batches, record

ANSWERS = torch.tensor([[3, 5], [7, 9]])
TOL = 1e-5
QK_NAMES = ("q_proj", "k_proj", "c_attn", "query_key_value", "q_norm", "k_norm")


def peaked(model: torch.nn.Module, factor: float = 6.0, unembed: float = 6.0) -> torch.nn.Module:
    """Scale every query/key projection (and q/k norm) weight so attention patterns are far from uniform,
    and the unembedding so next-token probabilities are too."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(f".{part}." in f".{name}" for part in QK_NAMES) and name.endswith("weight"):
                param.mul_(factor)
        model.get_output_embeddings().weight.mul_(unembed)
    return model


def hooked(architecture: str, **config) -> HookedModel:
    if config:
        cfg = tiny_config(architecture)
        for key, value in config.items():
            setattr(cfg, key, value)
        torch.manual_seed(0)
        return HookedModel(peaked(AutoModelForCausalLM.from_config(cfg).eval()))
    return HookedModel(peaked(tiny_model(architecture)))


def tokens_pair(pos=9, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, VOCAB, (batch, pos), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2:] = torch.randint(0, VOCAB, (batch, pos - 2), generator=g)  # a shared 2-token prefix
    return clean, corrupted


def _spread(frame, column):
    return float(frame[column].max() - frame[column].min())


@pytest.mark.parametrize("architecture", ARCHITECTURE_NAMES)
def test_every_sweep_equals_the_plain_path(architecture):
    model = hooked(architecture)
    clean, corrupted = tokens_pair()
    for direction, modes in (("denoise", ("layers", "auto")), ("noise", ("auto",))):
        frames = {
            reuse: activation_patching(
                model, clean, corrupted, answers=ANSWERS, sites=list(SITES), direction=direction, batch_size=24, reuse=reuse
            )
            for reuse in ("none", *modes)
        }
        assert _spread(frames["none"], "metric") > 0.05  # the patches matter: a wrong replay would show
        for reuse in modes:
            assert (frames[reuse]["metric"] - frames["none"]["metric"]).abs().max() < TOL, (direction, reuse)
    tokens = clean[:1]
    traces = {r: causal_trace(model, tokens, (2, 4), None, samples=3, noise=8.0, window=2, batch_size=12, reuse=r) for r in ("none", "auto")}
    # Tiny random models barely care about the noise: compare against the spread of the effects too.
    spread = _spread(traces["none"], "prob")
    assert spread > 0 and (traces["auto"]["prob"] - traces["none"]["prob"]).abs().max() < min(TOL, 0.01 * spread)
    knock = {r: subject_knockout_sweep(model, tokens, (2, 4), None, window=1, reuse=r) for r in ("none", "auto")}
    effect = float(knock["none"]["delta"].abs().max())
    assert effect > 0 and (knock["auto"]["metric"] - knock["none"]["metric"]).abs().max() < min(TOL, 0.01 * effect)
    ablation = {r: head_ablation(model, clean, method="zero", reuse=r) for r in ("none", "auto")}
    assert (ablation["auto"]["metric"] - ablation["none"]["metric"]).abs().max() < TOL
    joint = {r: joint_ablation(model, [(1, 0), (0, 1)], tokens=clean, method="zero", reuse=r) for r in ("none", "auto")}
    assert (joint["auto"]["metric"] - joint["none"]["metric"]).abs().max() < TOL


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "qwen3"])
def test_replayed_sweep_equals_the_naive_per_cell_loop(architecture):
    model = hooked(architecture)
    clean, corrupted = tokens_pair(pos=7)
    frame = activation_patching(model, clean, corrupted, answers=ANSWERS, sites=["resid_pre", "attn_out", "head_out_pos"], heads=[1])
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
    for row in frame.itertuples():
        hook = f"blocks.{row.layer}.{SITES[row.site].hook}"
        head = None if str(row.head) == "<NA>" else int(row.head)
        expected = naive_patch(model, corrupted, clean, ANSWERS, hook, int(row.position), head, cache=cache)
        assert abs(row.metric - expected) < TOL, (row.site, row.layer, row.position)


def test_staggered_cells_join_at_their_own_block_and_no_op_cells_never_run():
    model = hooked("llama")
    clean, corrupted = tokens_pair(pos=9, batch=2)
    rows = {0: [], 1: []}
    handles = [model.layers[i].mlp.register_forward_hook(lambda module, args, out, i=i: rows[i].append(args[0].shape[:2]))
               for i in (0, 1)]
    try:
        frame = activation_patching(model, clean, corrupted, answers=ANSWERS, sites="resid_pre", positions=[1, 6])
    finally:
        for handle in handles:
            handle.remove()
    # Position 1 lies in the shared prefix: those cells equal the base run and never run. Position 6 at
    # layers 0 and 1 share one forward: 2 prompt rows through block 0, 4 through block 1, 3 positions each.
    assert rows[0][2:] == [(2, 3)] and rows[1][2:] == [(4, 3)]
    shared = frame[frame["position"] == 1]
    assert (shared["metric"] == frame.attrs["corrupted_metric"]).all()
    expected = naive_patch(model, corrupted, clean, ANSWERS, "blocks.1.hook_resid_pre", 6, None)
    assert abs(float(frame[(frame["position"] == 6) & (frame["layer"] == 1)]["metric"].iloc[0]) - expected) < TOL


def test_a_metric_over_every_position_gets_the_base_logits_before_the_prefix():
    model = hooked("llama")
    clean, corrupted = tokens_pair()

    def metric(logits):  # reads every position, so the replay must fill in positions < prefix
        return logits[:, :, 3].mean(dim=1) - logits[:, :, 5].mean(dim=1)

    frames = {r: activation_patching(model, clean, corrupted, metric=metric, sites="resid_pre", reuse=r) for r in ("none", "auto")}
    assert (frames["auto"]["metric"] - frames["none"]["metric"]).abs().max() < TOL
    assert _spread(frames["none"], "metric") > 0.01


def test_prefix_reuse_runs_only_the_later_positions_and_blocks():
    model = hooked("llama")
    clean, corrupted = tokens_pair(pos=9, batch=1)
    seen = []
    handle = model.layers[1].mlp.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[:2]))
    try:
        activation_patching(model, clean, corrupted, answers=ANSWERS[:1], sites="resid_pre", layers=[1], positions=[6])
        assert seen[-1] == (1, 3)  # one cell: block 1 runs positions 6..8 only
        seen.clear()
        activation_patching(model, clean, corrupted, answers=ANSWERS[:1], sites="resid_pre", layers=[1], positions=[6], reuse="none")
        assert seen[-1] == (1, 9)
        seen.clear()
        # A patch at block 1 never runs block 0.
        block0 = []
        h0 = model.layers[0].mlp.register_forward_hook(lambda module, args, out: block0.append(1))
        try:
            activation_patching(model, clean, corrupted, answers=ANSWERS[:1], sites="resid_pre", layers=[1], reuse="layers")
        finally:
            h0.remove()
        assert len(block0) == 2  # the two recorded runs (clean and corrupted) only
    finally:
        handle.remove()


@pytest.mark.parametrize(("architecture", "config"), [
    ("mistral", {}),  # sliding window 6 < 9 tokens
    ("gemma2", {}),  # hybrid: sliding layers of 6
    ("gpt_neo", {}),  # local layers of 5
])
def test_short_attention_windows_fall_back_to_block_reuse(architecture, config):
    model = hooked(architecture, **config)
    clean, corrupted = tokens_pair(pos=9)
    recording, _ = record(model, corrupted)
    assert recording.prefix_reason is not None and "window" in recording.prefix_reason
    assert not recording.prefix_ok
    plan = plan_batches(recording, [(1, 5), (1, 7)], rows_per_cell=2, max_rows=8, last_only=True)
    assert all(batch.prefix == 0 for batch in plan)
    frames = {r: activation_patching(model, clean, corrupted, answers=ANSWERS, sites="resid_pre", reuse=r) for r in ("none", "auto")}
    assert (frames["auto"]["metric"] - frames["none"]["metric"]).abs().max() < TOL
    # A prompt inside the window is prefix-safe again.
    short, _ = record(model, corrupted[:, :5])
    assert short.prefix_ok, short.prefix_reason


def test_attention_window_reads_the_config():
    assert attention_window(tiny_config("llama")) is None
    assert attention_window(tiny_config("qwen2")) is None
    assert attention_window(tiny_config("mistral")) == 6
    assert attention_window(tiny_config("gemma2")) == 6
    assert attention_window(tiny_config("gpt_neo")) == 5


def test_planner_groups_cells_by_start_and_prefix():
    model = hooked("llama")
    clean, corrupted = tokens_pair(pos=9, batch=1)
    recording, _ = record(model, corrupted)
    needs = [(layer, pos) for layer in range(2) for pos in range(9)]
    plan = plan_batches(recording, needs, rows_per_cell=1, max_rows=4, last_only=True)
    assert sorted(i for batch in plan for i in batch.cells) == list(range(len(needs)))
    for batch in plan:
        assert len(batch.cells) <= 4
        assert batch.start == min(needs[i][0] for i in batch.cells)
        assert batch.prefix == min(needs[i][1] for i in batch.cells)
    none, _ = record(model, corrupted, reuse="none")
    assert all((b.start, b.prefix) == (0, 0) for b in plan_batches(none, needs, rows_per_cell=1, max_rows=4, last_only=True))


def test_unknown_reuse_is_one_line():
    model = hooked("llama")
    clean, corrupted = tokens_pair()
    with pytest.raises(InterpError, match="unknown reuse"):
        activation_patching(model, clean, corrupted, answers=ANSWERS, reuse="prefix")


def test_thread_probe_returns_a_count_it_compared_and_restores_torch(monkeypatch):
    from interp.threads import faster_thread_count

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("INTERP_THREADS", "auto")
        torch.set_num_threads(2)
        assert faster_thread_count() in (1, 2)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        assert faster_thread_count() == 1
        torch.set_num_threads(2)
        monkeypatch.delenv("INTERP_THREADS")
        assert faster_thread_count() == 2  # not adapting (the default): torch's count, whatever the load
    finally:
        torch.set_num_threads(before)
