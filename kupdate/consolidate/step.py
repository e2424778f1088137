"""One training step of a consolidation: (prompt, target) pairs padded and run through the model
(logits at the target positions only, a shared prompt start run once, rows of very different
lengths in separate passes), the loss (language-model loss plus cross-entropy to the teacher's or
the base model's top-k distributions) and the optimizer step in passes of bounded tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any


def pad_batch(pairs: Sequence[tuple[list[int], list[int]]], *, pad: int, device: Any) -> tuple[Any, Any, Any]:
    """Right-padded (input_ids, attention_mask, labels): labels are -100 outside the targets."""
    import torch

    width = max(len(p) + len(t) for p, t in pairs)
    ids, attn, labels = [], [], []
    for p, t in pairs:
        n = len(p) + len(t)
        ids.append(p + t + [pad] * (width - n))
        attn.append([1] * n + [0] * (width - n))
        labels.append([-100] * len(p) + t + [-100] * (width - n))
    as_t = lambda x: torch.tensor(x, device=device)  # noqa: E731
    return as_t(ids), as_t(attn), as_t(labels)


def target_batch(pairs: Sequence[tuple[list[int], list[int]]], *, pad: int, device: Any) -> tuple[Any, Any, Any, Any]:
    """`pad_batch`'s ids and mask, with the (row, column) of the position predicting each target
    token, all rows' targets in order (for `target_logits`)."""
    import torch

    input_ids, attn, _ = pad_batch(pairs, pad=pad, device=device)
    rows = torch.cat([torch.full((len(t),), r) for r, (_, t) in enumerate(pairs)]).to(device)
    cols = torch.cat([torch.arange(len(p) - 1, len(p) - 1 + len(t)) for p, t in pairs]).to(device)
    return input_ids, attn, rows, cols


def shared_prefix(prompts: Sequence[Sequence[int]]) -> list[int]:
    """The token ids all `prompts` begin with ([] when fewer than `prefill.MIN_SHARED`)."""
    from kupdate.answering.prefill import shared_prefix as common

    return list(prompts[0][: common(prompts)]) if len(prompts) > 1 else []


def _body_and_head(model: Any) -> tuple[Any, Any]:
    """The transformer body (hidden states) and the output layer of a (peft-wrapped) causal LM;
    (None, None) for a model that does not expose them."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(base, base.base_model_prefix, None)
    head = base.get_output_embeddings()
    return (body, head) if body is not None and head is not None else (None, None)


def target_logits(model: Any, input_ids: Any, attn: Any, rows: Any, cols: Any) -> Any:
    """Logits at the (row, col) positions only: the output layer (a 576 x 49k matmul per token for
    SmolLM2) runs on the target tokens, not on every prompt and padding token."""
    body, head = _body_and_head(model)
    if body is None:
        return model(input_ids=input_ids, attention_mask=attn).logits[rows, cols]
    hidden = body(input_ids=input_ids, attention_mask=attn).last_hidden_state
    return head(hidden[rows, cols])


def pair_logits(model: Any, pairs: Sequence[tuple[list[int], list[int]]], *, pad: int, device: Any,
                start: Sequence[int] = (), slack: float = 0.0) -> Any:
    """`target_logits` of (prompt ids, target ids) pairs, all rows' targets in order.

    `start`: token ids that many prompts begin with (the chat template's opening and system
    message, a third to a half of a short question's tokens). It is run once, without gradient,
    and its keys and values are shared by the rows that begin with it; the other rows do not
    attend to it. The logits are those of running every row whole (the model as it is now sees
    the same tokens at the same positions); only the gradient through `start`'s own positions is
    left out, which a step does not need to learn what follows it (docs/consolidation.md).

    `slack` >= 1: rows of very different lengths (a replayed exemplar's long answer beside short
    questions) run in separate passes, each padding to at most `slack` times its rows' own tokens
    (`slack_groups`): on a CPU a pass pays for every padded token. 0: one padded pass."""
    import torch

    from kupdate.answering.prefill import slack_groups

    n = len(start)
    uses = [n > 0 and len(p) > n and list(p[:n]) == list(start) for p, _ in pairs]
    groups = (slack_groups([len(p) - (n if u else 0) + len(t) for (p, t), u in zip(pairs, uses)], slack)
              if slack else [list(range(len(pairs)))])
    if len(groups) == 1:
        return _pair_logits(model, pairs, uses, pad=pad, device=device, start=start)
    parts = [_pair_logits(model, [pairs[i] for i in g], [uses[i] for i in g], pad=pad, device=device, start=start)
             for g in groups]
    # Put the groups' targets back in the rows' order.
    first, at = {}, 0
    for i in (i for g in groups for i in g):
        first[i] = at
        at += len(pairs[i][1])
    order = torch.tensor([first[i] + k for i in range(len(pairs)) for k in range(len(pairs[i][1]))],
                         device=parts[0].device)
    return torch.cat(parts)[order]


def _pair_logits(model: Any, pairs: Sequence[tuple[list[int], list[int]]], uses: Sequence[bool], *, pad: int,
                 device: Any, start: Sequence[int]) -> Any:
    """`pair_logits` of one pass; `uses`: which rows begin with `start`."""
    import torch

    from kupdate.answering.prefill import prefix_cache

    n = len(start)
    body, head = _body_and_head(model)
    if body is None or not any(uses):
        return target_logits(model, *target_batch(pairs, pad=pad, device=device))
    own = [(p[n:] if u else p, t) for (p, t), u in zip(pairs, uses)]
    input_ids, attn, rows, cols = target_batch(own, pad=pad, device=device)
    with torch.no_grad():
        cache = prefix_cache(body, torch.tensor([list(start)], device=device), len(pairs))
    used = torch.tensor(list(uses), device=device)
    mask = torch.cat([used[:, None].expand(-1, n).to(attn.dtype), attn], dim=1)
    positions = torch.arange(attn.shape[1], device=device)[None, :] + (used.long() * n)[:, None]
    hidden = body(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                  **cache).last_hidden_state
    return head(hidden[rows, cols])


def step_parts(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices of a step's rows (`lengths`: prompt + target tokens each) in parts run one
    forward/backward pass each: shortest first, each part's rows times its longest row at most
    `budget` tokens (a row longer than that alone); `budget` <= 0: one part. Activation memory
    grows with the tokens a pass holds, so this bounds a step's memory whatever its rows' lengths."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    if budget <= 0:
        return [order] if order else []
    parts: list[list[int]] = []
    for i in order:
        if parts and (len(parts[-1]) + 1) * lengths[i] <= budget:
            parts[-1].append(i)
        else:
            parts.append([i])
    return parts


def step(model: Any, opt: Any, batch: list[Any], cfg: Any, pad: int, device: Any,
          start: Sequence[int] = ()) -> tuple[float, int]:
    """One optimizer step on `batch`; returns its loss and its examples' tokens (`pair_logits`).

    The rows run in passes of at most `cfg.step_tokens` tokens (`step_parts`), each pass's loss
    backpropagated at once: the gradients add up to the whole batch's (every term is divided by the
    batch's counts, not the pass's), so the step is the same, in bounded memory."""
    import torch

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if str(device).startswith("cuda")
                else contextlib.nullcontext())
    slack = cfg.pass_slack if str(device) == "cpu" else 0.0  # a GPU pass costs about the same padded or not
    n_lm = sum(len(x.target_ids) for x in batch if x.kind != "replay")
    n_soft = sum(len(x.target_ids) for x in batch if x.soft is not None)
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for part in step_parts([len(x.prompt_ids) + len(x.target_ids) for x in batch], cfg.step_tokens):
        rows = [batch[i] for i in part]
        with autocast:
            logits = pair_logits(model, [(x.prompt_ids, x.target_ids) for x in rows], pad=pad, device=device,
                                 start=start, slack=slack)
        loss = _loss(torch.log_softmax(logits.float(), dim=-1), rows, cfg, n_lm, n_soft)
        if loss.requires_grad:  # rows with no term of their own (a replay row without distributions) add nothing
            loss.backward()
        total += float(loss.detach())
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
    opt.step()
    return total, sum(len(x.prompt_ids) + len(x.target_ids) for x in batch)


def _loss(logp_all: Any, rows: list[Any], cfg: Any, n_lm: int, n_soft: int) -> Any:
    """`rows`' share of a step's loss: language-model loss on their targets (questions and
    statements) summed over `n_lm`, the step's such targets, plus cross-entropy to the top-k
    distributions (teacher, or base model on replay) summed over `n_soft`."""
    import torch

    dev = logp_all.device
    loss = torch.zeros((), device=dev)
    offset = 0
    for x in rows:
        row_logp = logp_all[offset : offset + len(x.target_ids)]
        offset += len(x.target_ids)
        if x.kind != "replay":
            tgt = torch.tensor(x.target_ids, device=dev)
            loss = loss - row_logp.gather(1, tgt[:, None]).sum() / n_lm
        if x.soft is not None:
            ids, t_logp = (t.to(dev) for t in x.soft)
            p = torch.softmax(t_logp, dim=-1)  # the teacher's top-k, renormalised
            weight = cfg.kl_replay if x.kind == "replay" else cfg.kl_teacher
            loss = loss - weight * (p * row_logp.gather(1, ids)).sum() / n_soft
    return loss
