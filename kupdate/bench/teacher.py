"""Teacher-forced token accuracy, for comparison with EasyEdit-style numbers (not free generation).

For each case: the share of the new value's tokens that are the model's argmax given the raw
prompt (no chat template, as EasyEdit scores it) and the value's previous tokens; the mean over
cases. It is far more lenient than the free-generation metrics of DESIGN.md section 8 (a model
that would never *say* the value still scores on its later tokens), hence its own, labelled table.

- `base`: `prompt + " " + value`;
- `rag`: the top-k dense memories, one per line, then `prompt + " " + value`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kupdate.bench.datasets import EditCase
from kupdate.bench.modes import rag_context, without_adapters

FORMAT = "raw prompt + target, no chat template (EasyEdit-style)"


def token_accuracy(llm: Any, contexts: Sequence[str], targets: Sequence[str], batch_size: int = 16) -> list[float]:
    """Per pair: the share of `target` tokens predicted (argmax) after `context` and the target's
    earlier tokens. Batched with right padding (a causal model's earlier positions are unaffected)."""
    import torch

    tok = llm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out: list[float] = []
    for i in range(0, len(contexts), batch_size):
        rows, spans = [], []
        for ctx, target in zip(contexts[i : i + batch_size], targets[i : i + batch_size]):
            p = tok(ctx)["input_ids"]
            t = tok(" " + target.strip(), add_special_tokens=False)["input_ids"]
            rows.append(p + t)
            spans.append((len(p), len(t)))
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=llm.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=llm.device)
        with torch.no_grad():
            logits = llm.model(input_ids=ids, attention_mask=mask).logits
        for row, (lp, lt) in enumerate(spans):
            pred = logits[row, lp - 1 : lp + lt - 1].argmax(-1)
            out.append(float((pred == ids[row, lp : lp + lt]).float().mean()) if lt else 0.0)
    return out


def teacher_forced(kb: Any, cases: Sequence[EditCase], modes: Sequence[str]) -> dict[str, Any]:
    """Mean teacher-forced token accuracy of the new values per mode (`base`, `rag`)."""
    out: dict[str, Any] = {"format": FORMAT}
    targets = [c.fresh for c in cases]
    for mode in modes:
        if mode == "base":
            contexts = [c.prompt for c in cases]
        elif mode == "rag":
            contexts = ["\n".join(rag_context(kb, c.prompt)) + "\n" + c.prompt for c in cases]
        else:
            continue
        with without_adapters(kb):
            scores = token_accuracy(kb.llm, contexts, targets)
        out[mode] = {"value": round(sum(scores) / len(scores), 4) if scores else 0.0, "n": len(scores)}
    return out
