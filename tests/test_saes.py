"""SAEs and transcoders: SAELens' files, attaching, features at dynamic hook points, feature attribution.

References are computed here independently: the SAE formulas written out again, activations read by
hand-written torch hooks on the plain HF modules, replacements done by hand-written torch hooks, and
attribution checked against finite differences and exact ablations, in float64.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

import interp
from interp.errors import InterpError
from interp.hooks import HookedModel
from tiny_models import ARCHITECTURE_NAMES, tiny_model

D = 32  # tiny models' d_model (4 heads x d_head 8)
F64 = torch.float64
RESID = "blocks.0.hook_resid_post"
FEATURES = RESID + ".hook_sae_acts_post"


@pytest.fixture(scope="module")
def llama() -> HookedModel:
    return HookedModel(tiny_model("llama").to(F64))


def _tokens(batch=2, pos=9, seed=1):
    return torch.randint(0, 97, (batch, pos), generator=torch.Generator().manual_seed(seed))


def _weights(architecture: str, d_in=D, d_sae=48, d_out=None, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d_out = d_out or d_in
    w = {
        "W_enc": torch.randn(d_in, d_sae, generator=g) / math.sqrt(d_in),
        "W_dec": torch.randn(d_sae, d_out, generator=g) / math.sqrt(d_sae),
        "b_dec": 0.1 * torch.randn(d_out, generator=g),
    }
    if architecture == "gated":
        w |= {"b_gate": 0.1 * torch.randn(d_sae, generator=g), "b_mag": 0.1 * torch.randn(d_sae, generator=g),
              "r_mag": 0.1 * torch.randn(d_sae, generator=g)}
    else:
        w["b_enc"] = 0.1 * torch.randn(d_sae, generator=g)
    if "jumprelu" in architecture:
        w["threshold"] = 0.3 * torch.rand(d_sae, generator=g)
    if "skip" in architecture:
        w["W_skip"] = 0.1 * torch.randn(d_out, d_in, generator=g)
    return w


def _write(folder, cfg: dict, weights: dict[str, torch.Tensor]):
    """A folder in SAELens' layout, written by hand."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "sae_weights.safetensors"))
    return folder


def _cfg(architecture, hook_name, *, metadata=True, **extra):
    cfg = {"architecture": architecture, "d_in": D, "d_sae": 48, "apply_b_dec_to_input": True,
           "normalize_activations": "none", **extra}
    if metadata:
        cfg["metadata"] = {"hook_name": hook_name, "model_name": "tiny"}
    else:
        cfg["hook_name"] = hook_name
    return cfg


def _hand_features(architecture, w, x, *, k=None, apply_b_dec=True):
    """The SAELens formulas, written out again in float64."""
    w = {key: v.to(F64) for key, v in w.items()}
    xin = x - w["b_dec"] if apply_b_dec else x
    if architecture == "gated":
        gate = (xin @ w["W_enc"] + w["b_gate"]) > 0
        return gate * torch.clamp(xin @ (w["W_enc"] * torch.exp(w["r_mag"])) + w["b_mag"], min=0)
    pre = xin @ w["W_enc"] + w["b_enc"]
    if architecture == "topk":
        kth = pre.sort(dim=-1, descending=True).values[..., k - 1 : k]
        return torch.where(pre >= kth, torch.clamp(pre, min=0), torch.zeros_like(pre))
    acts = torch.clamp(pre, min=0)
    if "jumprelu" in architecture:
        acts = torch.where(pre > w["threshold"], acts, torch.zeros_like(acts))
    return acts


def _block_output(model: HookedModel, tokens, layer=0):
    """The residual stream leaving ``layer``, read by a hand-written hook on the plain HF block."""
    seen = {}
    handle = model.layers[layer].register_forward_hook(lambda m, a, out: seen.update(x=out[0] if isinstance(out, tuple) else out))
    try:
        model.model(input_ids=tokens)
    finally:
        handle.remove()
    return seen["x"]


def _replace_block_output(model: HookedModel, tokens, fn, layer=0):
    def hook(module, args, out):
        if isinstance(out, tuple):
            return (fn(out[0]), *out[1:])
        return fn(out)

    handle = model.layers[layer].register_forward_hook(hook)
    try:
        return model.model(input_ids=tokens).logits
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------- files
@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu", "gated"])
def test_saelens_file_features_and_error_term_are_exact(architecture, llama, tmp_path):
    w = _weights(architecture)
    extra = {"k": 5} if architecture == "topk" else {}
    folder = _write(tmp_path / architecture, _cfg(architecture, RESID, metadata=architecture != "standard", **extra), w)
    sae = interp.load_sae(folder, dtype=F64)
    assert (sae.hook_name, sae.architecture, sae.d_sae) == (RESID, architecture, 48)
    tokens = _tokens()
    base = llama(tokens)
    x = _block_output(llama, tokens)
    hand = _hand_features(architecture, w, x, k=5)
    assert hand.count_nonzero() > 0
    with llama.attach_sae(sae, use_error_term=True):
        assert torch.equal(llama(tokens), base)  # nothing reads the features: the activation passes untouched
        logits, cache = llama.run_with_cache(tokens, names=[FEATURES, RESID])
    torch.testing.assert_close(cache[FEATURES], hand, rtol=0, atol=1e-12)
    torch.testing.assert_close(logits, base, rtol=0, atol=1e-6)
    torch.testing.assert_close(cache[RESID], x, rtol=0, atol=1e-12)
    # Without the error term, the block's output is the reconstruction: as a hand-written hook does it.
    recon = lambda out: _hand_features(architecture, w, out, k=5) @ w["W_dec"].to(F64) + w["b_dec"].to(F64)  # noqa: E731
    expected = _replace_block_output(llama, tokens, recon)
    with llama.attach_sae(sae):
        torch.testing.assert_close(llama(tokens), expected, rtol=0, atol=1e-10)
    assert FEATURES not in llama.hook_names()  # the dynamic point is gone with the SAE


@pytest.mark.parametrize("architecture", ARCHITECTURE_NAMES)
def test_error_term_keeps_every_architectures_logits(architecture, tmp_path):
    model = HookedModel(tiny_model(architecture).to(F64))
    tokens = _tokens()
    base = model(tokens)
    for name in (RESID, "blocks.1.attn.hook_z", "blocks.0.hook_mlp_out"):
        sae = interp.load_sae(_write(tmp_path / name, _cfg("standard", name), _weights("standard")), dtype=F64)
        with model.attach_sae(sae, use_error_term=True):
            logits, cache = model.run_with_cache(tokens, names=[name + ".hook_sae_acts_post"])
        torch.testing.assert_close(logits, base, rtol=0, atol=1e-6)
        assert cache[name + ".hook_sae_acts_post"].count_nonzero() > 0


def test_hook_z_sae_reads_heads_concatenated(llama, tmp_path):
    name = "blocks.1.attn.hook_z"
    w = _weights("standard")
    sae = interp.load_sae(_write(tmp_path / "z", _cfg("standard", name), w), dtype=F64)
    tokens = _tokens()
    seen = {}
    proj = llama.layers[1].self_attn.o_proj
    handle = proj.register_forward_pre_hook(lambda m, args: seen.update(z=args[0]))
    llama.model(input_ids=tokens)
    handle.remove()
    base = llama(tokens)
    with llama.attach_sae(sae, use_error_term=True):
        logits, cache = llama.run_with_cache(tokens, names=[name + ".hook_sae_acts_post"])
    torch.testing.assert_close(cache[name + ".hook_sae_acts_post"], _hand_features("standard", w, seen["z"]), rtol=0, atol=1e-12)
    torch.testing.assert_close(logits, base, rtol=0, atol=1e-6)


def test_normalize_activations_and_no_b_dec_on_input(llama, tmp_path):
    w = _weights("standard")
    cfg = _cfg("standard", RESID, apply_b_dec_to_input=False, normalize_activations="layer_norm")
    sae = interp.load_sae(_write(tmp_path / "ln", cfg, w), dtype=F64)
    x = torch.randn(3, D, dtype=F64)
    mu, std = x.mean(-1, keepdim=True), x.std(-1, keepdim=True)
    xn = (x - mu) / (std + 1e-5)
    hand = _hand_features("standard", w, xn, apply_b_dec=False)
    torch.testing.assert_close(sae.encode(x), hand, rtol=0, atol=1e-12)
    torch.testing.assert_close(sae(x), (hand @ w["W_dec"].to(F64) + w["b_dec"].to(F64)) * std + mu, rtol=0, atol=1e-12)


def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


def test_bad_files_are_refused_in_one_line(llama, tmp_path):
    good = _weights("jumprelu")
    cases = {
        "no-folder": None,
        "missing-key": (_cfg("jumprelu", RESID), {k: v for k, v in good.items() if k != "threshold"}),
        "bad-shape": (_cfg("jumprelu", RESID), {**good, "W_dec": good["W_dec"][:, :-1]}),
        "unknown-architecture": (_cfg("matching_pursuit_9", RESID), good),
        "no-hook-name": ({"architecture": "jumprelu", "d_in": D, "d_sae": 48}, good),
        "cfg-disagrees": (_cfg("jumprelu", RESID) | {"d_sae": 7}, good),
        "topk-without-k": (_cfg("topk", RESID), _weights("topk")),
        "whitening": (_cfg("standard", RESID, normalize_activations="covariance_whitening"), _weights("standard")),
    }
    expected = {
        "no-folder": "does not exist", "missing-key": "lack threshold", "bad-shape": "W_dec has shape",
        "unknown-architecture": "unknown SAE architecture", "no-hook-name": "no hook_name",
        "cfg-disagrees": "d_sae=7", "topk-without-k": "positive integer k", "whitening": "covariance_whitening",
    }
    for name, case in cases.items():
        folder = tmp_path / name
        if case is not None:
            _write(folder, *case)
        with pytest.raises(InterpError) as error:
            interp.load_sae(folder)
        assert expected[name] in _one_line(error), (name, str(error.value))
    (tmp_path / "bad-json").mkdir()
    (tmp_path / "bad-json" / "cfg.json").write_text("{")
    (tmp_path / "bad-json" / "sae_weights.safetensors").write_bytes(b"nope")
    with pytest.raises(InterpError) as error:
        interp.load_sae(tmp_path / "bad-json")
    assert "not valid JSON" in _one_line(error)
    # Loads, but does not fit the model: refused when attached.
    wide = interp.load_sae(_write(tmp_path / "wide", _cfg("standard", RESID) | {"d_in": 64}, _weights("standard", d_in=64)))
    with pytest.raises(InterpError) as error, llama.attach_sae(wide):
        pass
    assert "d_in is 64" in _one_line(error)
    elsewhere = interp.load_sae(_write(tmp_path / "elsewhere", _cfg("standard", "blocks.7.hook_resid_post"), good | {"b_enc": good["b_enc"]}))
    with pytest.raises(InterpError) as error, llama.attach_sae(elsewhere):
        pass
    assert "blocks.7.hook_resid_post" in _one_line(error)


# ---------------------------------------------------------------------------------------------- hook points
def test_feature_points_exist_only_while_attached_and_can_be_patched(llama, tmp_path):
    w = _weights("standard")
    sae = interp.load_sae(_write(tmp_path / "s", _cfg("standard", RESID), w), dtype=F64)
    tokens = _tokens()
    with pytest.raises(ValueError, match="attach_sae"):
        llama.run_with_cache(tokens, names=[FEATURES])
    with llama.attach_sae(sae, use_error_term=True):
        assert llama.hook_names().index(FEATURES) == llama.hook_names().index(RESID) + 1
        with pytest.raises(InterpError, match="already attached"), llama.attach_sae(sae):
            pass
        # Zero every feature at position 3: the block output there loses exactly the decoded features.
        with llama.intervene(FEATURES, scale=0.0, positions=[3]):
            logits, cache = llama.run_with_cache(tokens, names=[RESID])
    x = _block_output(llama, tokens)
    f = _hand_features("standard", w, x)
    expected = x.clone()
    expected[:, 3] = x[:, 3] - f[:, 3] @ w["W_dec"].to(F64)
    torch.testing.assert_close(cache[RESID], expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(logits, _replace_block_output(llama, tokens, lambda out: expected), rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------- transcoders
@pytest.mark.parametrize("architecture", ARCHITECTURE_NAMES)  # gpt_neox: parallel attention and MLP
def test_transcoder_replaces_the_mlp_output(architecture, tmp_path):
    model = HookedModel(tiny_model(architecture).to(F64))
    w = _weights("skip_transcoder")
    cfg = {"architecture": "skip_transcoder", "d_in": D, "d_sae": 48, "d_out": D,
           "metadata": {"hook_name": "blocks.1.ln2.hook_normalized", "hook_name_out": "blocks.1.hook_mlp_out"}}
    tc = interp.load_sae(_write(tmp_path / "tc", cfg, w), dtype=F64)
    tokens = _tokens()
    base = model(tokens)
    mlp = model.layers[1].get_submodule(model.architecture_spec.mlp)
    seen = {}

    def by_hand(module, args, out):
        x = args[0]
        seen["x"], seen["out"] = x, out
        f = _hand_features("transcoder", w, x, apply_b_dec=False)
        return f @ w["W_dec"].to(F64) + w["b_dec"].to(F64) + x @ w["W_skip"].to(F64).T

    handle = mlp.register_forward_hook(by_hand)
    expected = model.model(input_ids=tokens).logits
    handle.remove()
    name = "blocks.1.hook_mlp_out.hook_sae_acts_post"
    with model.attach_transcoder(tc):
        torch.testing.assert_close(model(tokens), expected, rtol=0, atol=1e-10)
    with model.attach_transcoder(tc, use_error_term=True):
        logits, cache = model.run_with_cache(tokens, names=[name, "blocks.1.hook_mlp_out"])
    torch.testing.assert_close(logits, base, rtol=0, atol=1e-6)
    torch.testing.assert_close(cache[name], _hand_features("transcoder", w, seen["x"], apply_b_dec=False), rtol=0, atol=1e-12)
    with pytest.raises(InterpError, match="use model.attach_sae"), model.attach_transcoder(
        interp.load_sae(_write(tmp_path / "sae", _cfg("standard", RESID), _weights("standard")))
    ):
        pass
    with pytest.raises(InterpError, match="use model.attach_transcoder"), model.attach_sae(tc):
        pass


def test_transcoder_refuses_an_input_that_is_not_the_mlp_input(llama, tmp_path):
    cfg = {"architecture": "transcoder", "d_in": D, "d_sae": 48, "d_out": D,
           "metadata": {"hook_name": "blocks.1.hook_resid_pre", "hook_name_out": "blocks.1.hook_mlp_out"}}
    tc = interp.load_sae(_write(tmp_path / "tc", cfg, _weights("transcoder")))
    with pytest.raises(InterpError) as error, llama.attach_transcoder(tc):
        pass
    assert "ln2.hook_normalized" in _one_line(error)


# ---------------------------------------------------------------------------------------------- trained SAE + attribution
def _train_sae(model: HookedModel, d_sae=64, steps=300, seed=0) -> interp.SAE:
    """A ReLU SAE on layer 0's residual stream of random token sequences (a few seconds on CPU)."""
    tokens = torch.randint(0, 97, (64, 24), generator=torch.Generator().manual_seed(seed))
    _, cache = model.run_with_cache(tokens, names=[RESID])
    x = cache[RESID].reshape(-1, D).float()
    torch.manual_seed(seed)
    W_dec = torch.nn.Parameter(torch.randn(d_sae, D) / math.sqrt(D))
    W_enc = torch.nn.Parameter(W_dec.detach().T.clone())
    b_enc, b_dec = torch.nn.Parameter(torch.zeros(d_sae)), torch.nn.Parameter(x.mean(0).clone())
    optimizer = torch.optim.Adam([W_enc, W_dec, b_enc, b_dec], lr=3e-3)
    for _ in range(steps):
        f = torch.relu((x - b_dec) @ W_enc + b_enc)
        loss = ((f @ W_dec + b_dec - x) ** 2).sum(-1).mean() + 1e-3 * (f * W_dec.norm(dim=-1)).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sae = interp.SAE(W_enc, b_enc, W_dec, b_dec, hook_name=RESID)
    with torch.no_grad():
        fvu = ((sae(x) - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert fvu < 0.1, f"the tiny SAE did not train (fraction of variance unexplained {fvu:.3f})"
    return sae.to(F64)


@pytest.fixture(scope="module")
def model() -> HookedModel:
    # GPT-2's LayerNorm computes in the input's dtype (Llama's RMSNorm computes in float32), so finite
    # differences in float64 resolve the first-order term to ~1e-9.
    return HookedModel(tiny_model("gpt2").to(F64))


@pytest.fixture(scope="module")
def trained(model) -> interp.SAE:
    return _train_sae(model)


def _metric(logits):
    return logits[:, -1, 5].mean() - logits[:, -1, 7].mean()


def _patched_metric(model, sae, tokens, edit):
    with model.attach_sae(sae, use_error_term=True), model.hooks([(FEATURES, edit)]), torch.no_grad():
        return float(_metric(model(tokens)))


def _edit(row, position, feature, factor):
    def fn(acts, hook):
        out = acts.clone()
        out[row, position, feature] *= factor
        return out

    return fn


def test_trained_sae_error_term_keeps_logits(model, trained):
    tokens = _tokens(batch=3, pos=12, seed=5)
    base = model(tokens)
    with model.attach_sae(trained, use_error_term=True):
        logits, cache = model.run_with_cache(tokens, names=[FEATURES])
    torch.testing.assert_close(logits, base, rtol=0, atol=1e-6)
    x = _block_output(model, tokens)
    hand = torch.clamp((x - trained.b_dec) @ trained.W_enc + trained.b_enc, min=0)
    torch.testing.assert_close(cache[FEATURES], hand, rtol=0, atol=1e-12)
    assert 0 < (hand > 0).float().mean() < 0.9  # sparse but alive


def test_feature_attribution_is_the_exact_derivative_and_ranks_ablations(model, trained):
    tokens = _tokens(batch=1, pos=10, seed=3)
    frame = interp.feature_attribution(model, trained, tokens, _metric)
    assert list(frame.columns) == ["row", "position", "feature", "activation", "baseline", "gradient", "attribution"]
    assert (frame["activation"] > 0).all() and frame["attribution"].abs().is_monotonic_decreasing
    base = _patched_metric(model, trained, tokens, lambda a, h: None)
    with torch.no_grad():
        assert base == pytest.approx(float(_metric(model(tokens))), abs=1e-9)
    assert frame.attrs["metric"] == pytest.approx(base, abs=1e-9)
    top = frame.head(8)
    # First order: scaling one feature by (1 - eps) moves the metric by -eps * attribution (float64).
    eps = 1e-6
    for r in top.itertuples():
        moved = _patched_metric(model, trained, tokens, _edit(r.row, r.position, r.feature, 1 - eps)) - base
        assert moved == pytest.approx(-eps * r.attribution, rel=1e-3, abs=1e-12)
    # Zero-ablation, exactly: the estimate is linear, so it is close for these small effects (within 15%),
    # and of the same sign, where the metric moves by ~0.05 per feature.
    for r in top.itertuples():
        exact = base - _patched_metric(model, trained, tokens, _edit(r.row, r.position, r.feature, 0.0))
        assert exact == pytest.approx(r.attribution, rel=0.15), (r.feature, r.position, exact, r.attribution)


def test_feature_attribution_with_pairs_uses_the_corrupted_features_as_baseline(model, trained):
    clean, corrupted = _tokens(batch=2, pos=8, seed=11), _tokens(batch=2, pos=8, seed=12)
    frame = interp.feature_attribution(model, trained, (clean, corrupted), _metric)
    with model.attach_sae(trained, use_error_term=True):
        _, cache = model.run_with_cache(corrupted, names=[FEATURES])
    r = frame.iloc[0]
    assert r["baseline"] == pytest.approx(float(cache[FEATURES][int(r["row"]), int(r["position"]), int(r["feature"])]), abs=1e-12)
    assert r["attribution"] == pytest.approx((r["activation"] - r["baseline"]) * r["gradient"], rel=1e-12)
    # First order along the clean -> corrupted move of that one feature.
    t = 1e-6
    target = r["activation"] + t * (r["baseline"] - r["activation"])

    def move(acts, hook):
        out = acts.clone()
        out[int(r["row"]), int(r["position"]), int(r["feature"])] = target
        return out

    base = _patched_metric(model, trained, clean, lambda a, h: None)
    assert _patched_metric(model, trained, clean, move) - base == pytest.approx(-t * r["attribution"], rel=1e-3)


# ---------------------------------------------------------------------------------------------- sae_lens itself
def test_an_sae_saved_by_sae_lens_loads(llama, tmp_path):
    sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is not installed (pip install -e .[sae])")

    x = _block_output(llama, _tokens())
    kinds = [
        ("StandardSAE", {}), ("JumpReLUSAE", {}), ("GatedSAE", {}), ("TopKSAE", {"k": 6}),
        ("TopKSAE", {"k": 6, "rescale_acts_by_decoder_norm": True}), ("StandardSAE", {"apply_b_dec_to_input": False}),
        ("StandardSAE", {"normalize_activations": "layer_norm"}),
        ("SkipTranscoder", {"d_out": D, "apply_b_dec_to_input": False}),
        ("JumpReLUTranscoder", {"d_out": D, "apply_b_dec_to_input": False}),
    ]
    for i, (kind, options) in enumerate(kinds):
        cfg = getattr(sae_lens, kind + "Config")(d_in=D, d_sae=48, dtype="float64", **options)
        cfg.metadata.hook_name = "blocks.1.ln2.hook_normalized" if "Transcoder" in kind else RESID
        theirs = getattr(sae_lens, kind)(cfg)
        with torch.no_grad():
            for p in theirs.parameters():
                p.copy_(0.3 * torch.randn_like(p))
        folder = tmp_path / f"{i}-{kind}"
        theirs.save_model(folder)
        for ours in (interp.load_sae(folder), interp.load_sae(theirs)):
            assert ours.hook_name == cfg.metadata.hook_name, kind
            torch.testing.assert_close(ours.encode(x), theirs.encode(x), rtol=0, atol=1e-12, msg=f"{kind} {options}")
            torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-12, msg=f"{kind} {options}")


def test_feature_attribution_of_a_transcoder_is_the_exact_derivative(model, tmp_path):
    cfg = {"architecture": "transcoder", "d_in": D, "d_sae": 48, "d_out": D,
           "metadata": {"hook_name": "blocks.0.ln2.hook_normalized", "hook_name_out": "blocks.0.hook_mlp_out"}}
    tc = interp.load_sae(_write(tmp_path / "tc", cfg, _weights("transcoder", seed=4)), dtype=F64)
    tokens = _tokens(batch=1, pos=8, seed=7)
    frame = interp.feature_attribution(model, tc, tokens, _metric)
    name = "blocks.0.hook_mlp_out.hook_sae_acts_post"
    assert frame.attrs["hook_name"] == name and len(frame) > 0
    r = frame.iloc[0]

    def metric_with(factor):
        with model.attach_transcoder(tc, use_error_term=True), model.hooks([(name, _edit(0, int(r["position"]), int(r["feature"]), factor))]):
            with torch.no_grad():
                return float(_metric(model(tokens)))

    eps = 1e-6
    assert metric_with(1 - eps) - metric_with(1.0) == pytest.approx(-eps * r["attribution"], rel=1e-3)


def test_a_float32_sae_on_a_bfloat16_model_keeps_the_models_dtype(tmp_path):
    model = HookedModel(tiny_model("llama").to(torch.bfloat16))
    sae = interp.load_sae(_write(tmp_path / "s", _cfg("standard", RESID), _weights("standard")))
    tokens = _tokens()
    base = model(tokens)
    with model.attach_sae(sae, use_error_term=True):
        logits, cache = model.run_with_cache(tokens, names=[FEATURES, RESID])
    assert cache[FEATURES].dtype == torch.float32 and cache[RESID].dtype == torch.bfloat16
    torch.testing.assert_close(logits, base, rtol=0, atol=0)  # bf16 rounding absorbs the float32 error term
