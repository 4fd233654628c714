"""Tests for pointset/nn/kmax_decoder_layer.py (and pointset/nn/kmax_predictor.py).

Oracles: the official kMaX-DeepLab ``kMaXTransformerLayer`` through the reference fixture
``kmax_small.pt`` (outputs, intermediates, train mode, gradients, float64 keys), the official
state-dict listing ``kmax_transformer_layer_os32.txt`` (keys, shapes, parameter count), the
layer's own dense path (for the packed path), each cloud run alone (for packed batches) and
finite differences (gradcheck).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from pointset.data import grid_positions
from pointset.nn import KMaXDecoderLayer
from pointset.nn.kmax_predictor import pixel_window

OUTPUTS = ("query_out", "class_logits", "mask_logits", "pixel_feature")


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def fixture(shared_dir):
    return torch.load(shared_dir / "reference/fixtures/kmax_small.pt", weights_only=True)


def fixture_layer(data, dtype=torch.float32) -> KMaXDecoderLayer:
    """The fixture's layer: its config (official argument names mapped to ours) with the
    literals 256/128/2048 mapped (width_map_json)."""
    widths = {int(k): v for k, v in json.loads(data["width_map_json"]).items()}
    layer = KMaXDecoderLayer.from_official(
        json.loads(data["config_json"]),
        pixel_head_dim=widths[256],
        embed_dim=widths[128],
        ffn_dim=widths[2048],
    )
    layer.load_state_dict(data["state_dict"], strict=True)
    return layer.to(dtype).eval()


def run_dense(layer, case, dtype=torch.float32):
    query_out, pred = layer.forward_dense(case["pixel"].to(dtype), case["query"].to(dtype))
    return {"query_out": query_out, **pred}


def run_packed(layer, cases, dtype=torch.float32):
    """Pack the images of ``cases`` into one point set with (row, col) positions."""
    xs, pos, batch, queries = [], [], [], []
    for case in cases:
        pixel = case["pixel"]
        for b in range(pixel.size(0)):
            _, h, w = pixel[b].shape
            xs.append(pixel[b].flatten(1).t())
            pos.append(grid_positions(h, w))
            batch.append(torch.full((h * w,), len(queries), dtype=torch.long))
            queries.append(case["query"][b])
    x, p, bt = torch.cat(xs).to(dtype), torch.cat(pos).to(dtype), torch.cat(batch)
    return layer(x, p, bt, query_feature=torch.stack(queries).to(dtype)), bt


def assert_close(actual, expected, atol=5e-5, rtol=1e-5, name=""):
    diff = (actual.double() - expected.double()).abs().max().item()
    assert torch.allclose(actual.double(), expected.double(), atol=atol, rtol=rtol), (
        f"{name}: max |diff| {diff}"
    )


def tiny_layer(seed=0, **kw) -> KMaXDecoderLayer:
    torch.manual_seed(seed)
    args = dict(num_classes=5, in_channels=6, query_channels=8, base_filters=4, num_heads=2)
    args.update(kw)
    layer = KMaXDecoderLayer(**args, pixel_head_dim=8, embed_dim=4, ffn_dim=12)
    with torch.no_grad():  # move every parameter and BN statistic away from its init
        for name, t in layer.state_dict().items():
            if t.is_floating_point():
                t.add_(torch.rand_like(t) * 0.6 - 0.3)
                if name.endswith("running_var"):
                    t.abs_().add_(0.5)
        layer._predcitor._pixel_space_mask_batch_norm.weight.fill_(1.3)
    return layer


# ----------------------------------------------------------------------------- keys, counts
def test_official_listing_keys_shapes_and_count(shared_dir):
    """Oracle: the official state-dict listing of the os32 layer (keys, shapes, 2,148,888)."""
    lines = (
        (shared_dir / "reference/state_dicts/kmax_transformer_layer_os32.txt")
        .read_text()
        .splitlines()
    )
    expected = []
    for line in lines[1:]:
        key, shape, _ = line.split("\t")
        expected.append((key, tuple(int(s) for s in shape.split(",")) if shape else ()))
    layer = KMaXDecoderLayer(134, 2048, 256, 128, 8, 2, 1, 2, drop_path_prob=0.2)
    got = [(k, tuple(v.shape)) for k, v in layer.state_dict().items()]
    assert got == expected  # same keys, shapes and order
    assert sum(p.numel() for p in layer.parameters()) == 2_148_888
    assert "2148888 parameters" in lines[0]


def test_fixture_state_dict_loads_strict(fixture):
    """Oracle: the official fixture's state_dict (95 keys) loads with strict=True."""
    layer = fixture_layer(fixture)
    assert set(layer.state_dict()) == set(fixture["state_dict"])
    assert len(fixture["state_dict"]) == 95
    assert sum(p.numel() for p in layer.parameters()) == 18_819


def test_official_init_values():
    """Oracle: the official initialisation (BN weight 0 on the three residual branches,
    0.1 on the mask BN, zero class bias)."""
    layer = KMaXDecoderLayer(9, 24, 48, 16, 4)
    for name in ("_query_conv3_bn", "_query_ffn_conv2_bn", "_kmeans_query_conv3_bn"):
        assert torch.count_nonzero(getattr(layer, name).norm.weight) == 0
    assert layer._predcitor._pixel_space_mask_batch_norm.weight.item() == pytest.approx(0.1)
    assert torch.count_nonzero(layer._predcitor._transformer_class_head.conv.bias) == 0
    assert "KMaXDecoderLayer(num_classes=9" in repr(layer)


# ----------------------------------------------------------------------------- fixture parity
@pytest.mark.parametrize("case", ["a", "b"])
def test_fixture_outputs_float32(fixture, case):
    """Oracle: kmax_small.pt outputs of the official layer (eval), atol 5e-5 / rtol 1e-5;
    assignments exact."""
    layer = fixture_layer(fixture)
    with torch.no_grad():
        out = run_dense(layer, fixture[case])
    for key in OUTPUTS:
        assert_close(out[key], fixture[case][key], name=key)
    assert torch.equal(out["assignment"], fixture[case]["assignment"])
    # the void bias log(8 * 0.9 / 0.1) sits on the last logit
    assert out["class_logits"].shape[-1] == 9


@pytest.mark.parametrize("case", ["a", "b"])
def test_fixture_outputs_float64(fixture, case):
    """Oracle: kmax_small.pt ``*_fp64`` keys (official layer in float64), atol 1e-9."""
    layer = fixture_layer(fixture, torch.float64)
    with torch.no_grad():
        out = run_dense(layer, fixture[case], torch.float64)
    for key in OUTPUTS:
        assert_close(out[key], fixture[case][key + "_fp64"], atol=1e-9, rtol=0, name=key)
    assert torch.equal(out["assignment"], fixture[case]["assignment"])


@pytest.mark.parametrize("case", ["a", "b"])
def test_fixture_intermediates(fixture, case):
    """Oracle: kmax_small.pt intermediates (pixel_space, query_space, pixel_value, the k-means
    sum before/after BN, the k-means / self-attention / FFN updates)."""
    layer = fixture_layer(fixture)
    data = fixture[case]
    b, _, h, w = data["pixel"].shape
    seen = {}

    def grab(name, fn=lambda t: t):
        return lambda mod, inp, out: seen.__setitem__(name, fn(out))

    def to_grid(t):
        return t.view(b, h, w, -1).permute(0, 3, 1, 2)

    hooks = [
        layer._pixel_conv1_bn_act.register_forward_hook(grab("pixel_space", to_grid)),
        layer._query_conv1_bn_act.register_forward_hook(grab("query_space")),
        layer._pixel_v_conv_bn.register_forward_hook(grab("pixel_value", to_grid)),
        layer.kmeans.register_forward_hook(grab("kmeans_sum", lambda s: s.update.transpose(1, 2))),
        layer._kmeans_query_batch_norm_retrieved_value.register_forward_hook(grab("kmeans_sum_bn")),
        layer._kmeans_query_conv3_bn.register_forward_hook(grab("kmeans_update")),
        layer._query_self_attention.register_forward_hook(grab("self_attn_retrieved")),
        layer._query_conv3_bn.register_forward_hook(grab("self_attn_update")),
        layer._query_ffn_conv2_bn.register_forward_hook(grab("ffn_update")),
    ]
    with torch.no_grad():
        run_dense(layer, data)
    for hook in hooks:
        hook.remove()
    for key, value in seen.items():
        assert value.shape == data[key].shape, key
        assert_close(value, data[key], name=key)


def test_fixture_train_mode(fixture):
    """Oracle: kmax_small.pt ``train_a`` (case a in train mode, BatchNorm batch statistics)."""
    layer = fixture_layer(fixture).train()
    out = run_dense(layer, fixture["a"])
    for key in OUTPUTS:
        assert_close(out[key], fixture["train_a"][key], name=key)
    assert torch.equal(out["assignment"], fixture["train_a"]["assignment"])


def _grad_close(actual, expected, name):
    # floor 1e-5: the similarity-BN bias has a zero gradient in exact arithmetic (the
    # softmax is shift invariant), so both sides hold float32 rounding noise of ~1e-6 there
    atol = max(1e-4 * expected.abs().max().item(), 1e-5)
    assert_close(actual, expected, atol=atol, rtol=1e-4, name=name)


def test_fixture_gradients(fixture):
    """Oracle: kmax_small.pt ``grad_all`` (inputs and every parameter) for
    sum_k <output_k, grad_R[k]> in eval mode, rtol 1e-4 + atol 1e-4 max|grad|."""
    layer = fixture_layer(fixture)
    pixel = fixture["a"]["pixel"].clone().requires_grad_()
    query = fixture["a"]["query"].clone().requires_grad_()
    query_out, pred = layer.forward_dense(pixel, query)
    out = {"query_out": query_out, **pred}
    loss = sum((out[k] * fixture["grad_R"][k]).sum() for k in OUTPUTS)
    loss.backward()
    _grad_close(pixel.grad, fixture["grad_all"]["pixel"], "pixel")
    _grad_close(query.grad, fixture["grad_all"]["query"], "query")
    params = dict(layer.named_parameters())
    assert set(params) == set(fixture["grad_all"]["params"])
    for name, grad in fixture["grad_all"]["params"].items():
        _grad_close(params[name].grad, grad, name)


def test_fixture_gradients_query_only(fixture):
    """Oracle: kmax_small.pt ``grad_query_only``; and no ``_predcitor.*`` parameter gets a
    gradient from the centers alone (the assignment is not differentiated)."""
    layer = fixture_layer(fixture)
    pixel = fixture["a"]["pixel"].clone().requires_grad_()
    query = fixture["a"]["query"].clone().requires_grad_()
    query_out, _ = layer.forward_dense(pixel, query)
    (query_out * fixture["grad_R"]["query_out"]).sum().backward()
    _grad_close(pixel.grad, fixture["grad_query_only"]["pixel"], "pixel")
    _grad_close(query.grad, fixture["grad_query_only"]["query"], "query")
    for name, p in layer.named_parameters():
        if name.startswith("_predcitor."):
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
        elif not name.startswith("_query_ffn") and "conv3" not in name:
            assert p.grad is not None, name


# ----------------------------------------------------------------------------- packed path
def test_fixture_packed_a0_a1_b0(fixture):
    """Oracle: kmax_small.pt cases a and b: the three images packed as one ragged point set
    ([a0, a1, b0] with (row, col) positions, eval mode) give the official numbers."""
    layer = fixture_layer(fixture)
    with torch.no_grad():
        (query_out, pred), batch = run_packed(layer, [fixture["a"], fixture["b"]])
    a, b = fixture["a"], fixture["b"]
    assert_close(query_out, torch.cat([a["query_out"], b["query_out"]]), name="query_out")
    assert_close(
        pred["class_logits"], torch.cat([a["class_logits"], b["class_logits"]]), name="class"
    )
    expected_masks = torch.cat(
        [
            a["mask_logits"].flatten(2).transpose(1, 2).reshape(-1, 12),
            b["mask_logits"].flatten(2).transpose(1, 2).reshape(-1, 12),
        ]
    )
    assert_close(pred["mask_logits"], expected_masks, name="mask_logits")
    expected_feat = torch.cat(
        [
            a["pixel_feature"].flatten(2).transpose(1, 2).reshape(-1, 16),
            b["pixel_feature"].flatten(2).transpose(1, 2).reshape(-1, 16),
        ]
    )
    assert_close(pred["pixel_feature"], expected_feat, name="pixel_feature")
    assert torch.equal(
        pred["assignment"], torch.cat([a["assignment"].flatten(), b["assignment"].flatten()])
    )


def test_fixture_packed_float64(fixture):
    """Oracle: kmax_small.pt ``*_fp64`` keys for the packed [a0, a1, b0] run, atol 1e-9."""
    layer = fixture_layer(fixture, torch.float64)
    with torch.no_grad():
        (query_out, pred), _ = run_packed(layer, [fixture["a"], fixture["b"]], torch.float64)
    expected = torch.cat([fixture["a"]["query_out_fp64"], fixture["b"]["query_out_fp64"]])
    assert_close(query_out, expected, atol=1e-9, rtol=0, name="query_out")


def _random_grid_batch(b, h, w, c, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("train", [False, True])
def test_dense_equals_packed(train):
    """Oracle: the dense (official) path; the packed path on the same pixels with their
    (row, col) positions gives the same numbers, in eval and in train mode (BatchNorm batch
    statistics over the same pixels, as there is no padding)."""
    layer = tiny_layer().double().train(train)
    pixel = _random_grid_batch(2, 5, 7, 6, seed=1)
    query = torch.randn(2, 8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    dense_q, dense = copy.deepcopy(layer).forward_dense(pixel, query)
    x = pixel.flatten(2).transpose(1, 2).reshape(-1, 6)
    pos = grid_positions(5, 7, dtype=torch.float64).repeat(2, 1) * 0.25
    batch = torch.arange(2).repeat_interleave(35)
    packed_q, packed = copy.deepcopy(layer)(x, pos, batch, query_feature=query, spacing=0.25)
    assert_close(packed_q, dense_q, atol=1e-10, rtol=0)
    assert_close(packed["class_logits"], dense["class_logits"], atol=1e-10, rtol=0)
    assert_close(
        packed["mask_logits"],
        dense["mask_logits"].flatten(2).transpose(1, 2).reshape(-1, 3),
        atol=1e-10,
        rtol=0,
    )
    assert torch.equal(packed["assignment"], dense["assignment"].flatten())


@pytest.mark.parametrize("use_pos", [False, True])
def test_packed_batch_equals_clouds_one_at_a_time(use_pos):
    """Oracle: each cloud run alone; a packed batch of unequal clouds gives the same
    per-cloud results (eval mode), with and without a 5x5 window."""
    layer = tiny_layer().double().eval()
    g = torch.Generator().manual_seed(3)
    sizes = [9, 4, 13]
    xs = [torch.randn(n, 6, generator=g, dtype=torch.float64) for n in sizes]
    ps = [torch.rand(n, 2, generator=g, dtype=torch.float64) * 4 for n in sizes]
    query = torch.randn(3, 8, 4, generator=g, dtype=torch.float64)
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    pos = torch.cat(ps) if use_pos else None
    q_all, p_all = layer(torch.cat(xs), pos, batch, query_feature=query)
    start = 0
    for i, n in enumerate(sizes):
        q_i, p_i = layer(xs[i], ps[i] if use_pos else None, None, query_feature=query[i : i + 1])
        assert_close(q_all[i : i + 1], q_i, atol=1e-12, rtol=0)
        assert_close(
            p_all["mask_logits"][start : start + n], p_i["mask_logits"], atol=1e-12, rtol=0
        )
        assert torch.equal(p_all["assignment"][start : start + n], p_i["assignment"])
        start += n


def test_no_window_is_center_tap():
    """Oracle: a 1x1 image through the dense path (the 5x5 conv sees only its center tap)
    equals the packed path without positions."""
    layer = tiny_layer().double().eval()
    pixel = _random_grid_batch(3, 1, 1, 6, seed=4)
    query = torch.randn(3, 8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    dense_q, _ = layer.forward_dense(pixel, query)
    packed_q, _ = layer(pixel.flatten(1), None, torch.arange(3), query_feature=query)
    assert_close(packed_q, dense_q, atol=1e-12, rtol=0)


def test_gradcheck_packed():
    """Oracle: finite differences (torch.autograd.gradcheck) of the packed path in float64."""
    layer = tiny_layer().double().eval()
    g = torch.Generator().manual_seed(6)
    x = torch.randn(10, 6, generator=g, dtype=torch.float64, requires_grad=True)
    pos = torch.rand(10, 2, generator=g, dtype=torch.float64) * 3
    query = torch.randn(2, 8, 3, generator=g, dtype=torch.float64, requires_grad=True)
    batch = torch.tensor([0] * 6 + [1] * 4)
    window = pixel_window(pos, batch)
    logits = layer(x, None, batch, query_feature=query, window=window)[1]["mask_logits"]
    top2 = logits.topk(2, dim=1).values
    assert (top2[:, 0] - top2[:, 1]).min() > 1e-4  # no assignment flips under eps = 1e-6

    def fn(x_, q_):
        out, pred = layer(x_, None, batch, query_feature=q_, window=window)
        return out, pred["mask_logits"], pred["class_logits"], pred["pixel_feature"]

    assert torch.autograd.gradcheck(fn, (x, query), eps=1e-6, atol=1e-6)


def test_drop_path_train_only():
    """Oracle: stochastic depth is the identity in eval mode and random in train mode."""
    layer = tiny_layer(drop_path_prob=0.5).double()
    pixel = _random_grid_batch(4, 3, 3, 6, seed=7)
    query = torch.randn(4, 8, 2, dtype=torch.float64)
    layer.eval()
    assert torch.equal(layer.forward_dense(pixel, query)[0], layer.forward_dense(pixel, query)[0])
    layer.train()
    torch.manual_seed(0)
    a = layer.forward_dense(pixel, query)[0]
    torch.manual_seed(1)
    assert not torch.equal(a, layer.forward_dense(pixel, query)[0])


# ----------------------------------------------------------------------------- bad input
def test_bad_input_raises_value_error():
    """Oracle: the input contract; each bad input raises ValueError naming the problem."""
    layer = tiny_layer().eval()
    pixel = torch.randn(2, 6, 3, 3)
    query = torch.randn(2, 8, 3)
    with pytest.raises(ValueError, match="channels"):
        layer.forward_dense(torch.randn(2, 5, 3, 3), query)
    with pytest.raises(ValueError, match="channels"):
        layer.forward_dense(pixel, torch.randn(2, 7, 3))
    with pytest.raises(ValueError, match="batch size 2 but query_feature has 3"):
        layer.forward_dense(pixel, torch.randn(3, 8, 3))
    with pytest.raises(ValueError, match="empty"):
        layer.forward_dense(torch.randn(2, 6, 0, 3), query)
    x = torch.randn(5, 6)
    with pytest.raises(ValueError, match="cloud 1 .* is empty"):
        layer(x, None, torch.tensor([0, 0, 2, 2, 2]), query_feature=torch.randn(3, 8, 3))
    with pytest.raises(ValueError, match="2 clouds but query_feature holds 1"):
        layer(x, None, torch.tensor([0, 0, 1, 1, 1]), query_feature=torch.randn(1, 8, 3))
    with pytest.raises(ValueError, match="0 points"):
        layer(torch.randn(0, 6), None, None, query_feature=torch.randn(1, 8, 3))
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        layer(bad, None, None, query_feature=torch.randn(1, 8, 3))
    pos = torch.rand(5, 2)
    pos[3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        layer(x, pos, None, query_feature=torch.randn(1, 8, 3))
    with pytest.raises(ValueError, match="2 coordinates"):
        layer(x, torch.rand(5, 3), None, query_feature=torch.randn(1, 8, 3))
    with pytest.raises(ValueError, match="num_heads"):
        KMaXDecoderLayer(5, 6, 8, base_filters=4, num_heads=3)


def test_predictor_alone_matches_the_layer_outputs(fixture):
    """Oracle: kmax_small.pt: the predictor run on the official ``pixel_space`` and
    ``query_space`` reproduces the official class / mask logits and pixel features."""
    layer = fixture_layer(fixture)
    case = fixture["b"]
    with torch.no_grad():
        pred = layer._predcitor.forward_dense(case["pixel_space"], case["query_space"])
    for key in ("class_logits", "mask_logits", "pixel_feature"):
        assert_close(pred[key], case[key], name=key)
    with pytest.raises(ValueError, match="a cloud is empty"):
        layer._predcitor(torch.randn(4, 32), query=case["query_space"].expand(2, -1, -1))


def test_bfloat16_runs_close_to_float32():
    """Oracle: the float32 run; a bfloat16 copy of the layer (sums and softmax accumulated
    in float32) stays within 5 % of the largest output."""
    layer = tiny_layer().eval()
    pixel = torch.randn(2, 6, 4, 5, generator=torch.Generator().manual_seed(8))
    query = torch.randn(2, 8, 3, generator=torch.Generator().manual_seed(9))
    ref = layer.forward_dense(pixel, query)[0]
    low = copy.deepcopy(layer).to(torch.bfloat16).forward_dense(pixel.bfloat16(), query.bfloat16())
    low = low[0]
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_from_official_maps_the_argument_names_and_names_bad_ones():
    """Oracle: the official ``kMaXTransformerLayer`` keyword names (deeplab2 / kmax-deeplab):
    ``in_channel_pixel`` / ``in_channel_query`` land in ``in_channels`` /
    ``query_channels``; an unknown or doubled argument is named in the error."""
    official = dict(num_classes=9, in_channel_pixel=24, in_channel_query=48, base_filters=16)
    layer = KMaXDecoderLayer.from_official(official, num_heads=4, pixel_head_dim=8)
    same = KMaXDecoderLayer(9, 24, 48, 16, num_heads=4, pixel_head_dim=8)
    assert {k: v.shape for k, v in layer.state_dict().items()} == {
        k: v.shape for k, v in same.state_dict().items()
    }
    with pytest.raises(ValueError, match=r"unknown kMaXTransformerLayer argument\(s\) \['dim'\]"):
        KMaXDecoderLayer.from_official({**official, "dim": 3})
    with pytest.raises(ValueError, match=r"given twice: \['in_channels'\]"):
        KMaXDecoderLayer.from_official({**official, "in_channels": 24})
    with pytest.raises(ValueError, match=r"given twice: \['num_classes'\]"):
        KMaXDecoderLayer.from_official(official, num_classes=3)
