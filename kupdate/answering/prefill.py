"""The prefill of a batch of prompts: the key/value cache `generate` starts decoding from.

On a CPU a batch pays for every token its prefill runs, padding included, so only the tokens that
differ are run: the start all prompts share once (`prefix_cache`), or each prompt kind's start
once and its rows' own tokens in groups of similar length (`prefilled_cache`), the batch's cache
stitched from them in the layout `generate` expects (docs/serve.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MIN_SHARED = 16  # a shorter common start is not worth a pass of its own


def shared_prefix(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all `rows` share (0 below MIN_SHARED), leaving each row at least
    one token of its own to start generating from."""
    n = min(len(r) for r in rows) - 1
    first = rows[0]
    for r in rows[1:]:
        n = min(n, next((i for i in range(n) if r[i] != first[i]), n))
    return n if n >= MIN_SHARED else 0


def prefix_cache(model: Any, prefix: Any, batch: int) -> dict[str, Any]:
    """The keyword (for `generate` or a forward call of `model`) passing the key/value cache of
    `prefix` (one row), repeated for a batch of `batch` rows: the shared start of the prompts is
    computed once instead of once per row (on a CPU the prefill, not the decoding, is what a batch
    pays for per row; docs/serve.md). transformers 5 names it `cache`, 4.x `past_key_values`."""
    out = model(input_ids=prefix, use_cache=True)
    name = "cache" if "cache" in out else "past_key_values"
    cache = out[name]
    if batch > 1:
        cache.batch_repeat_interleave(batch)
    return {name: cache}


PAD_SLACK = 1.15  # rows prefilled together pad to at most this much more than their own tokens


def prefilled_cache(model: Any, rows: Sequence[Sequence[int]], shared: int, width: int, pad: int,
                    device: Any) -> dict[str, Any]:
    """The key/value cache of every token of each row but its last, laid out as `generate` gets
    its input ([shared][pad...][the row's other tokens], width `width`), so that `generate` runs
    only each row's last token before decoding (the keyword to pass it, as `prefix_cache`).

    A batch's prefill costs a CPU every padded token: rows of very different lengths (a long note
    beside a bare question) padded to the longest, and two prompt kinds (the memory prompt's system
    message and the model's default one) with no start in common, spend much of it on padding and
    on system messages run once per row. Here the common start of each prompt kind runs once, then
    its rows' own tokens in groups of similar length (`PAD_SLACK`); the padding columns of the
    batch cache are never computed (they are masked). Returns {} (a plain prefill) for rows too
    short to share a start, or caches not made of per-layer key/value tensors."""
    import torch

    with torch.no_grad():
        return _prefilled(model, rows, shared, width, pad, device)


def _prefilled(model: Any, rows: Sequence[Sequence[int]], shared: int, width: int, pad: int,
               device: Any) -> dict[str, Any]:
    import copy

    import torch

    batch: Any = None
    keys: list[Any] = []
    values: list[Any] = []
    for kind, groups in _prefill_groups(rows):
        start = shared_prefix([rows[i] for i in kind]) if len(kind) > 1 else len(rows[kind[0]]) - 1
        if start == 0:
            return {}
        # Only the cache is wanted: the output layer runs on one position, not on every token.
        out = _cache_pass(model, input_ids=torch.tensor([list(rows[kind[0]][:start])], device=device))
        name = "cache" if "cache" in out else "past_key_values"
        begun = out[name]
        if not getattr(begun, "layers", None) or any(type(x).__name__ != "DynamicLayer" for x in begun.layers):
            return {}
        if batch is None:  # holds the batch's tensors at the end
            batch = copy.deepcopy(begun)
        for group in groups:
            own = [list(rows[i][start:-1]) for i in group]
            longest = max(len(o) for o in own)
            cache = copy.deepcopy(begun) if longest else begun
            if longest:
                cache.batch_repeat_interleave(len(group))
                ids = [[pad] * (longest - len(o)) + o for o in own]
                mask = [[1] * start + [0] * (longest - len(o)) + [1] * len(o) for o in own]
                positions = [[1] * (longest - len(o)) + list(range(start, start + len(o))) for o in own]
                _cache_pass(model, input_ids=torch.tensor(ids, device=device),
                            attention_mask=torch.tensor(mask, device=device),
                            position_ids=torch.tensor(positions, device=device), **{name: cache})
            if not keys:
                keys = [torch.zeros((len(rows), x.keys.shape[1], width - 1, x.keys.shape[-1]), dtype=x.keys.dtype,
                                    device=x.keys.device) for x in cache.layers]
                values = [torch.zeros_like(k) for k in keys]
            for j, i in enumerate(group):
                # Row i's token t sits at column t before `shared`, else at t + (width - len(row)).
                n, shift = len(rows[i]) - 1, width - len(rows[i])
                for into, field in ((keys, "keys"), (values, "values")):
                    for dest, layer in zip(into, cache.layers):
                        got = getattr(layer, field)[j if longest else 0]  # not repeated when nothing followed
                        row = torch.cat([got[:, :start], got[:, got.shape[1] - len(own[j]):]], dim=1)
                        dest[i, :, :shared] = row[:, :shared]
                        dest[i, :, shared + shift : n + shift] = row[:, shared:]
    for layer, k, v in zip(batch.layers, keys, values):
        layer.keys, layer.values = k, v
    return {name: batch}


def _cache_pass(model: Any, **inputs: Any) -> Any:
    """A forward pass kept for its key/value cache: the output layer on the last position only
    (`logits_to_keep`), where the model takes that argument."""
    try:
        return model(use_cache=True, logits_to_keep=1, **inputs)
    except TypeError:  # a model class without `logits_to_keep`
        return model(use_cache=True, **inputs)


def _prefill_groups(rows: Sequence[Sequence[int]]) -> list[tuple[list[int], list[list[int]]]]:
    """Indices of `rows` by prompt kind (their first `MIN_SHARED` tokens), each kind's rows in
    `slack_groups` (shortest first)."""
    kinds: dict[tuple[int, ...], list[int]] = {}
    for i in sorted(range(len(rows)), key=lambda i: (len(rows[i]), i)):
        kinds.setdefault(tuple(rows[i][:MIN_SHARED]), []).append(i)
    return [(kind, [[kind[j] for j in g] for g in slack_groups([len(rows[i]) for i in kind])])
            for kind in kinds.values()]


def slack_groups(lengths: Sequence[int], slack: float = PAD_SLACK, extra: int = 8) -> list[list[int]]:
    """Indices of `lengths` in groups, shortest first, each group padding to at most `slack` times
    its own tokens plus `extra` (a few tokens' slack for short rows): rows run together pay for the
    longest one, so rows of very different lengths run apart."""
    groups: list[list[int]] = []
    total = 0
    for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        n = lengths[i]
        if groups and (len(groups[-1]) + 1) * n <= slack * (total + n) + extra:
            groups[-1].append(i)
            total += n
        else:
            groups.append([i])
            total = n
    return groups
