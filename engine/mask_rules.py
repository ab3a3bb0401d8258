"""The slot rules of a mask-predict pass, batched over every sequence of the pass.

Tensors [S, W] hold one row per sequence and one column per target slot; columns past a
sequence's length are padding and never inside its block. A pass first predicts every
masked slot of each sequence's current block; a rule then decides, per sequence, which of
those predictions are kept (`fill`) and which slots of the block go back to the mask token
(`remask`), both bool [S, W]:

  low_confidence  fill every predicted slot; remask the n(t) slots of the block with the
                  lowest confidence
  random          fill every predicted slot; remask the n(t) slots of the block with the
                  smallest mix_seed(seed, REMASK_STREAM, pass, slot)
  commit          fill the most confident predicted slots, as many as leave n(t) masked;
                  remask nothing
  threshold tau   (replaces the remask rule) fill every predicted slot with confidence
                  >= tau, or the most confident one when none reaches it; remask nothing

Ties: lowest first for remasking, highest first for filling, and in both the lower
position first among equal keys (`smallest` sorts stably).

A new remasking rule is one function `rule(view: PassView) -> (fill, remask)` and one entry
in REMASK_RULES; MaskPredictParams accepts the names of this table. When n(t) = 0 a rule
must fill every predicted slot and remask none (nothing is left masked): a pass in which
every row has n(t) = 0 takes that answer without calling the rules.
"""
from dataclasses import dataclass

import torch

from engine.mask_schedule import REMASK_STREAM
from engine.seeding import mix_seeds_torch


@dataclass(frozen=True)
class PassView:
    """What a rule sees of one pass: every sequence of it, after its predictions."""

    predicted: torch.Tensor  # bool [S, W]: masked slots of the block, predicted this pass
    confidence: torch.Tensor  # float32 [S, W]: every slot's confidence, new predictions included
    in_block: torch.Tensor  # bool [S, W]: the slots of each sequence's current block
    keep_masked: torch.Tensor  # int64 [S]: n(t), the slots of the block left masked after the pass
    seeds: torch.Tensor  # int64 [S]: each sequence's seed (its uint64 bits)
    pass_index: torch.Tensor  # int64 [S]: passes the sequence ran before this one


def smallest(keys: torch.Tensor, eligible: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Bool [S, W]: per row, the `count` eligible slots with the smallest keys; among equal
    keys the lower position first. count [S] may exceed the eligible slots or be <= 0."""
    order = torch.sort(keys, dim=1, stable=True).indices
    eligible_in_order = eligible.gather(1, order)
    taken = eligible_in_order & (eligible_in_order.cumsum(1) <= count[:, None])
    return torch.zeros_like(eligible).scatter_(1, order, taken)


def low_confidence(view: PassView):
    return view.predicted, smallest(view.confidence, view.in_block, view.keep_masked)


def random_slots(view: PassView):
    slots = torch.arange(view.in_block.shape[1], device=view.in_block.device)
    keys = mix_seeds_torch(view.seeds[:, None], REMASK_STREAM, view.pass_index[:, None], slots[None, :])
    return view.predicted, smallest(keys, view.in_block, view.keep_masked)


def commit(view: PassView):
    count = view.predicted.sum(1) - view.keep_masked
    return smallest(-view.confidence, view.predicted, count), torch.zeros_like(view.predicted)


REMASK_RULES = {"low_confidence": low_confidence, "commit": commit, "random": random_slots}


def threshold_fill(view: PassView, threshold: torch.Tensor) -> torch.Tensor:
    """The slots a confidence threshold fills: float64 threshold [S], compared in float64 so
    that tau is the exact number the user gave."""
    reached = view.predicted & (view.confidence.double() >= threshold[:, None])
    best = smallest(-view.confidence, view.predicted, torch.ones_like(view.keep_masked))
    return torch.where(reached.any(1, keepdim=True), reached, best)
