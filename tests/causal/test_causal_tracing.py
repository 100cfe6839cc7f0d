"""Causal tracing: restoring the last hidden state restores the clean probability; restoring nothing changes nothing."""

import numpy as np
import pytest
import torch
from causal_helpers import tiny_model

from interp.causal.tracing import causal_trace, find_subject, plot_causal_trace, to_rome, window_layers
from interp.errors import InterpError
from interp.hooks import HookedModel, hook_name

PROMPT = "In 1889, the Eiffel Tower was built in the city of"


def _noise(model, n_subject, samples=10, noise=3.0, seed=0):
    std = model.model.get_input_embeddings().weight.std()
    return torch.randn(samples, n_subject, model.cfg.d_model, generator=torch.Generator().manual_seed(seed)) * noise * std


def test_real_model_restores_clean_probability_at_the_last_state(smollm):
    frame = causal_trace(smollm, PROMPT, "the Eiffel Tower", " Paris", kinds=["resid"], layers=[29], positions=[0, -1])
    start, end = frame.attrs["subject_range"]
    tokens = smollm.to_tokens(PROMPT)
    assert "".join(frame.attrs["input_tokens"][start:end]).strip() == "the Eiffel Tower"
    with torch.no_grad():
        clean_p = torch.softmax(smollm(tokens)[0, -1], -1)[frame.attrs["answer_id"]].item()
        noise = _noise(smollm, end - start)

        def corrupt(act, hook):
            out = act.clone()
            out[:, start:end] += noise
            return out

        corrupted = smollm.run_with_hooks(tokens.repeat(10, 1), fwd_hooks=[("hook_embed", corrupt)])
        low = torch.softmax(corrupted[:, -1], -1)[:, frame.attrs["answer_id"]].mean().item()
    assert frame.attrs["high_score"] == pytest.approx(clean_p, abs=1e-6)
    assert frame.attrs["low_score"] == pytest.approx(low, abs=1e-6)
    assert clean_p - low > 0.05  # the corruption matters on this prompt
    last = frame[(frame["layer"] == 29) & (frame["position"] == tokens.shape[1] - 1)].iloc[0]
    assert last["prob"] == pytest.approx(clean_p, abs=1e-5)
    assert last["indirect_effect"] == pytest.approx(clean_p - low, abs=1e-5)
    # Position 0 lies before the subject: clean and corrupted states agree there, restoring it is a no-op.
    before = frame[frame["position"] == 0]
    assert np.allclose(before["indirect_effect"], 0.0, atol=1e-6)
    rome = to_rome(frame, "resid")
    assert rome["scores"].shape == (tokens.shape[1], 30)
    assert rome["scores"][-1, 29] == pytest.approx(clean_p, abs=1e-5)
    assert np.isnan(rome["scores"][3, 10]) and np.isnan(rome["scores"][-1, 0])  # not traced
    assert rome["subject_range"] == (start, end) and rome["kind"] == ""


def _naive_trace_cell(model, tokens, start, end, answer, kind, layer, position, window, samples=4):
    """One forward per cell, written from the ROME recipe."""
    site = {"resid": "hook_resid_post", "attn": "hook_attn_out", "mlp": "hook_mlp_out"}[kind]
    restored = [layer] if kind == "resid" else list(range(max(0, layer - window // 2), min(model.cfg.n_layers, layer - (-window // 2))))
    names = [hook_name(l, site) for l in restored]
    noise = _noise(model, end - start, samples=samples)
    with torch.no_grad():
        _, clean = model.run_with_cache(tokens, names=names)

        def corrupt(act, hook):
            out = act.clone()
            out[:, start:end] += noise
            return out

        def restore(act, hook):
            out = act.clone()
            out[:, position] = clean[hook.name][0, position]
            return out

        logits = model.run_with_hooks(tokens.repeat(samples, 1), fwd_hooks=[("hook_embed", corrupt)] + [(n, restore) for n in names])
    return torch.softmax(logits[:, -1], -1)[:, answer].mean().item()


@pytest.mark.parametrize(("architecture", "window"), [("gpt2", 10), ("llama", 1), ("llama", 2)])
def test_batched_trace_equals_naive_loop_on_tiny_models(architecture, window):
    model = HookedModel(tiny_model(architecture))
    tokens = torch.randint(0, 97, (1, 6), generator=torch.Generator().manual_seed(3))
    frame = causal_trace(model, tokens, (1, 3), 7, samples=4, window=window, batch_size=12)
    assert len(frame) == 3 * 6 * 2
    for row in frame.itertuples():
        expected = _naive_trace_cell(model, tokens, 1, 3, 7, row.kind, row.layer, row.position, window)
        assert row.prob == pytest.approx(expected, abs=1e-6)
    assert plot_causal_trace(frame).data


def test_window_is_centred_and_clipped_like_rome():
    assert window_layers(0, 10, 30) == list(range(0, 5))
    assert window_layers(15, 10, 30) == list(range(10, 20))
    assert window_layers(29, 10, 30) == list(range(24, 30))
    assert window_layers(3, 1, 30) == [3]


def test_subject_errors(smollm):
    tokens = smollm.to_tokens(PROMPT)[0]
    assert find_subject(smollm, tokens, "Eiffel")[1] - find_subject(smollm, tokens, "Eiffel")[0] >= 1
    with pytest.raises(InterpError, match="does not occur"):
        causal_trace(smollm, PROMPT, "the Louvre", " Paris")
    with pytest.raises(InterpError, match="subject is empty"):
        causal_trace(smollm, PROMPT, " ", " Paris")
    with pytest.raises(InterpError, match="single token"):
        causal_trace(smollm, PROMPT, "the Eiffel Tower", " xqzjv")
    with pytest.raises(InterpError, match="empty"):
        causal_trace(smollm, "", "the Eiffel Tower", " Paris")


def test_noise_scale_is_the_std_of_what_hook_embed_sees():
    """Gemma scales its embeddings by sqrt(d_model) inside the embedding module: the noise must too."""
    from tiny_models import tiny_model as tiny

    from interp.causal.tracing import embedding_std

    llama = HookedModel(tiny("llama"))
    assert embedding_std(llama) == float(llama.model.get_input_embeddings().weight.float().std())
    gemma = HookedModel(tiny("gemma3_text"))
    weight_std = float(gemma.model.get_input_embeddings().weight.float().std())
    assert embedding_std(gemma) == pytest.approx(weight_std * gemma.model.config.hidden_size ** 0.5, rel=1e-3)
