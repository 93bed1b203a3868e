"""The factors' L1 strength γ and its one writer (issue 27).

Each factor param group carries three keys. ``gamma_base``: the γ it was built with, written
once (by the optimizer's constructor, from the group's ``gamma``). ``gamma_scale``: the
steering's last setting (1 until the first), set by :func:`set_penalty_scale` alone. ``gamma``:
the γ the next step uses (the base until then), derived from the two by that function alone, so
every reader (the optimizers, GAL's L1 term) reads one value and a budget edits nothing else.
"""

from __future__ import annotations

from torch.optim import Optimizer


def own_penalty(optimizer: Optimizer) -> None:
    """Gives every group its base γ and a scale of 1, and keeps the base through loads of
    states saved before ``gamma_base`` existed. Called by each factor optimizer's constructor."""
    for group in optimizer.param_groups:
        group.setdefault("gamma_base", group["gamma"])
        group.setdefault("gamma_scale", 1.0)
    optimizer.register_load_state_dict_pre_hook(_fill_old_state)


def _fill_old_state(optimizer: Optimizer, state: dict) -> dict:
    """An old state's groups hold only ``gamma`` (the γ its next step would have used; it stays):
    the base and scale come from the optimizer as built, as the old budget kept its own base."""
    saved, mine = state["param_groups"], optimizer.param_groups
    if len(saved) != len(mine):  # torch refuses it, with its own message
        return state
    keys = ("gamma_base", "gamma_scale")
    groups = [{**{k: m[k] for k in keys}, **s} for s, m in zip(saved, mine, strict=True)]
    return {**state, "param_groups": groups}


def base_penalties(optimizer: Optimizer) -> list[float]:
    """Each group's base γ, in group order."""
    return [group["gamma_base"] for group in optimizer.param_groups]


def set_penalty_scale(optimizer: Optimizer, scale: float, *, threshold: bool = False) -> None:
    """The one writer of the γ the factor steps use: each group's base γ times ``scale``.

    Args:
        optimizer: A factor optimizer (:class:`~sss.optim.APG`, ``ISTA``, ``FISTA``, ``L1SGD``).
        scale: The multiplier on every base γ (0 turns the penalty off).
        threshold: ``scale`` is then the soft threshold lr·γ of the group with the largest base
            γ, and each group's γ is ``scale / lr * base / largest``: a threshold in proportion
            to its base γ, whatever lr is now (a later change of lr leaves γ as set here).
    """
    top = (max(base_penalties(optimizer)) or 1.0) if threshold else 1.0
    for group in optimizer.param_groups:
        base = group["gamma_base"]
        group["gamma_scale"] = scale
        # The orders of operations are the old budget's, so that runs reproduce to the bit.
        group["gamma"] = scale / group["lr"] * base / top if threshold else base * scale
