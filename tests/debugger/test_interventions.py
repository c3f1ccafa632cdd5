"""Value names, coefficients, interventions, the matched random control and the coefficient edit."""

import pytest
import torch

from lmscope.debugger.interventions import (
    Intervention,
    coefficient_setter,
    parse_coefficient,
    parse_value_name,
    random_values,
    value_name,
)


def test_value_names_round_trip_and_errors():
    assert parse_value_name("L12D34") == (12, 34)
    assert parse_value_name(" l3d0 ") == (3, 0)
    assert value_name(12, 34) == "L12D34"
    for bad in ("", "L12", "D34", "L-1D3", "12D34", "L1.5D2", "layer12unit34"):
        with pytest.raises(ValueError, match="L<layer>D<unit>"):
            parse_value_name(bad)
    with pytest.raises(IndexError, match="layer 99 does not exist"):
        parse_value_name("L99D1", n_layers=30, d_ff=1536)
    with pytest.raises(IndexError, match="unit 1536 does not exist"):
        parse_value_name("L1D1536", n_layers=30, d_ff=1536)


def test_coefficients_parse_and_reject_non_finite():
    assert parse_coefficient("off") == ("off", None)
    assert parse_coefficient(" ON ") == ("on", None)
    assert parse_coefficient(2) == ("set", 2.0)
    assert parse_coefficient("-1.5e1") == ("set", -15.0)
    for bad in (float("nan"), float("inf"), "inf", "nan", "abc", True, None, [1.0]):
        with pytest.raises(ValueError, match="(finite|number)"):
            parse_coefficient(bad)


def test_intervention_parse_describe_and_change(tiny):
    _, _, view = tiny
    iv = Intervention.parse("L2D5", "3.5", view=view)
    assert (iv.layer, iv.unit, iv.mode, iv.value, iv.enabled) == (2, 5, "set", 3.5, True)
    assert iv.describe() == "L2D5=3.5"
    assert iv.with_coefficient("off").describe() == "L2D5=off"
    assert Intervention(1, 3, "on", 0.25).describe() == "L1D3=on\u00d70.25"
    assert Intervention(1, 3, "on").describe() == "L1D3=on"
    assert Intervention(1, 3, "off", enabled=False).describe() == "L1D3=off (disabled)"
    with pytest.raises(IndexError, match="layer 99"):
        Intervention.parse("L99D1", "off", view=view)
    with pytest.raises(IndexError, match=f"unit {view.cfg.d_ff} does not exist"):
        Intervention.parse(f"L0D{view.cfg.d_ff}", "off", view=view)
    with pytest.raises(ValueError, match="finite"):
        Intervention.parse("L1D1", float("nan"))


def test_random_values_match_the_layers_and_avoid_the_chosen_ones(tiny):
    _, _, view = tiny
    chosen = [Intervention(0, u, "on") for u in range(view.cfg.d_ff - 2)]  # leaves 2 units of layer 0 free
    layers = [0, 0, 2, 1]
    control = random_values(view, layers, seed=3, exclude=chosen, scale=0.5)
    assert [iv.layer for iv in control] == layers
    assert all(iv.mode == "on" and iv.value == 0.5 for iv in control)
    units = {(iv.layer, iv.unit) for iv in control}
    assert len(units) == len(control)  # no value drawn twice
    assert not units & {(iv.layer, iv.unit) for iv in chosen}
    assert {iv.unit for iv in control if iv.layer == 0} == {view.cfg.d_ff - 2, view.cfg.d_ff - 1}
    assert random_values(view, layers, seed=3, exclude=chosen, scale=0.5) == control  # same seed, same draw
    assert random_values(view, [1] * 5, seed=4) != random_values(view, [1] * 5, seed=5)


def test_coefficient_setter_sets_units_at_every_position_and_per_prompt():
    coeffs = torch.arange(2 * 3 * 6, dtype=torch.float64).reshape(2, 3, 6)  # (B, T, d_ff)
    out = coefficient_setter(torch.tensor([1, 4]), torch.tensor([-1.0, 7.0]))(coeffs)
    assert torch.all(out[..., 1] == -1) and torch.all(out[..., 4] == 7)
    keep = [0, 2, 3, 5]
    assert torch.equal(out[..., keep], coeffs[..., keep]) and out.dtype == coeffs.dtype
    assert coeffs[0, 0, 1] == 1  # the input is not changed in place
    per_prompt = coefficient_setter(torch.tensor([2]), torch.tensor([[5.0], [6.0]]))(coeffs)  # values (B, n)
    assert torch.all(per_prompt[0, :, 2] == 5) and torch.all(per_prompt[1, :, 2] == 6)
