"""The student: the model plus a fresh LoRA adapter (peft), trained under a sparse mask.

Loss per step: language-model loss on statements and answers, plus cross-entropy to the
teacher's top-k distributions (KL up to a constant) on questions, plus cross-entropy to the base
model's distributions on replayed exemplars. Before training, a short dense warm-up on the same
data scores every adapter entry (see `masks`); the adapter is reset and only the masked entries
are trained.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kupdate.consolidate import masks as masks_mod
from kupdate.consolidate.step import shared_prefix, step

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WARMUP_STEPS = 4
CHECK_TOKENS = 16  # new tokens per answer when checking whether the facts come back


@dataclass
class TrainResult:
    mask: dict[str, Any]
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    epochs: int = 0
    # Per check: the share of the facts' own clozes answered with their value (early stopping),
    # and when it was made, in passes (2.0: after the second pass; 2.5: half-way through the third).
    recalled: list[float] = field(default_factory=list)
    checked_at: list[float] = field(default_factory=list)
    passes: float = 0.0  # steps made, in passes over every example (a focused round is part of one)
    focus: list[str] = field(default_factory=list)  # the facts the last check missed (`focus`)
    examples: int = 0
    resumed_from: int = 0  # passes already done by a killed run this one continued (`resume`)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


@contextlib.contextmanager
def adapters_off(model: Any) -> Iterator[None]:
    """The base model: every adapter switched off (a no-op for a model without adapters)."""
    if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        with model.disable_adapter():
            yield
    else:
        yield


def lora_config(cfg: Any, modules: Sequence[str]) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules=list(modules),
                      bias="none", task_type="CAUSAL_LM")


def target_modules(model: Any) -> list[str]:
    """The usual LoRA targets present in `model` (Llama-style names), else every Linear's name."""
    import torch

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    found = [m for m in TARGET_MODULES if m in names]
    linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    return found or sorted(linear - {"lm_head", "base_layer"})


def attach(llm: Any, name: str, cfg: Any) -> Any:
    """Add a fresh adapter `name` to the KB's model (wrapping it in peft the first time) and make
    it the only active one. Returns the PeftModel (also left in `llm.model`)."""
    import torch
    from peft import PeftModel, get_peft_model

    torch.manual_seed(cfg.seed)  # every domain's adapter starts from the same A (see masks)
    if isinstance(llm.model, PeftModel):
        # Every domain's adapter has the same targets (and so the same shapes as its mask).
        known = next(iter(llm.model.peft_config.values()), None)
        modules = sorted(known.target_modules) if known else target_modules(llm.model)
        llm.model.add_adapter(name, lora_config(cfg, modules))
        llm.model.base_model.set_adapter(name)
    else:
        llm.model = get_peft_model(llm.model, lora_config(cfg, target_modules(llm.model)), adapter_name=name)
    return llm.model


def adapter_params(model: Any, name: str) -> dict[str, Any]:
    """The adapter's parameters keyed by a name without the adapter's own (same keys for every domain)."""
    return {n.replace(f".{name}.", "."): p for n, p in model.named_parameters() if f".{name}." in n}


def train(llm: Any, examples: Sequence[Any], cfg: Any, *, name: str, taken: dict[str, Any] | None,
          masked: bool = True, progress: bool = False, epochs: int | None = None,
          partial: Any = None, mask: dict[str, Any] | None = None) -> TrainResult:
    """Train adapter `name` (already attached) on `examples`; returns its mask and figures.

    `mask`: train under this mask (an incremental round's, the serving version's) instead of one
    chosen by a warm-up. `partial` (a `resume.Partial`): the state is saved there after every pass,
    and a state found there (a killed run's) is continued from instead of starting again."""
    trainer = Trainer(llm, examples, cfg, name=name)
    state = partial.load("train") if partial is not None else None
    if state is not None:  # the saved mask (read onto the CPU), back where the entries are
        mask = state["mask"] and {n: m.to(trainer.params[n].device) for n, m in state["mask"].items()}
    elif mask is None and masked:
        mask = masks_mod.select(trainer.importance(), cfg.density, taken)
    save = (lambda s: partial.save("train", s)) if partial is not None else None
    return trainer.run(mask, progress=progress, epochs=epochs, save=save, state=state)


class Trainer:
    """One adapter's training in two steps, so the mask can be chosen in between (by another
    process when several domains train at once): `importance` runs the dense warm-up and resets
    the adapter; `run` trains under the mask. The shuffling continues from the warm-up, so the two
    steps train exactly what `train` does."""

    def __init__(self, llm: Any, examples: Sequence[Any], cfg: Any, *, name: str) -> None:
        self.llm, self.cfg, self.name = llm, cfg, name
        self.params = adapter_params(llm.model, name)
        self.init = {n: p.detach().clone() for n, p in self.params.items()}
        self.rng = random.Random(cfg.seed)
        self.facts = [x for x in examples if x.kind != "replay"]
        self.replay = [x for x in examples if x.kind == "replay"]
        self.per_step = max(1, cfg.batch_size // 8) if self.replay else 0
        tok = llm.tokenizer
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        # The start the chat-template prompts share (questions and replay; statements have none).
        self.start = shared_prefix([x.prompt_ids for x in examples if x.kind != "statement"]) if cfg.share_start else []

    @contextlib.contextmanager
    def _training(self) -> Iterator[Any]:
        """Only the adapter's parameters take gradients, in train mode; both undone on exit."""
        model = self.llm.model
        for p in model.parameters():
            p.requires_grad_(False)
        for p in self.params.values():
            p.requires_grad_(True)
        model.train()
        try:
            yield model
        finally:
            model.eval()
            for p in self.params.values():
                p.requires_grad_(False)

    def importance(self) -> dict[str, Any]:
        """Score every adapter entry by how far a short dense warm-up moves it; then reset."""
        import torch

        with self._training() as model:
            opt = torch.optim.AdamW(list(self.params.values()), lr=self.cfg.learning_rate, weight_decay=0.0)
            for batch in _batches(self.facts, self.replay, self.cfg.batch_size, self.per_step, self.rng,
                                  steps=WARMUP_STEPS):
                step(model, opt, batch, self.cfg, self.pad, self.llm.device, self.start)
            scores = {n: (p.detach() - self.init[n]).abs() for n, p in self.params.items()}
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(self.init[n])
        return scores

    def run(self, mask: dict[str, Any] | None, *, progress: bool = False, epochs: int | None = None,
            save: Callable[[dict[str, Any]], None] | None = None, state: dict[str, Any] | None = None) -> TrainResult:
        """Train under `mask` (None: every entry may change, no warm-up needed).

        `save`: called with the trainer's state after every pass; `state`: such a state to continue
        from (its adapter entries, optimizer, schedule, shuffling and figures are restored)."""
        import torch
        from tqdm import tqdm

        cfg, llm = self.cfg, self.llm
        given = mask
        full = mask is None
        if full:
            mask = {n: torch.ones_like(p, dtype=torch.bool) for n, p in self.params.items()}
        result = TrainResult(mask=mask)
        with self._training() as model:
            handles = [] if full else masks_mod.apply(self.params, mask)
            try:
                opt = torch.optim.AdamW(list(self.params.values()), lr=cfg.learning_rate, weight_decay=0.0)
                n_epochs = epochs or cfg.epochs
                full_steps = math.ceil(len(self.facts) / cfg.batch_size)
                total = n_epochs * full_steps
                sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(cfg.schedule, step, total))
                checks = [x for x in self.facts if x.check is not None]
                done, before = self._restore(state, opt, sched, result) if state is not None else (False, 0.0)
                bar = tqdm(total=total, initial=result.steps, desc=f"consolidate {self.name}", unit="step",
                           disable=not progress, leave=False)
                start, seen = time.perf_counter(), result.examples
                first_check = min(cfg.min_epochs, n_epochs)

                def check(passes: float) -> bool:
                    """Whether enough facts come back to stop (never before `first_check` passes);
                    with `focus`, the facts that did not come back are kept for the next round."""
                    if cfg.stop_recall <= 0 or not checks or passes < first_check:
                        return False
                    got = answered(llm, checks)
                    result.recalled.append(round(sum(got) / len(got), 4))
                    result.checked_at.append(round(passes, 3))
                    if cfg.focus:
                        result.focus = sorted({x.fact for x, ok in zip(checks, got) if not ok})
                    return result.recalled[-1] >= cfg.stop_recall

                for epoch in range(result.epochs, 0 if done else n_epochs):
                    # A pass over everything, or, after a check that did not stop, a round on the
                    # facts it missed (docs/consolidation.md, "Focused rounds").
                    focused = self._focused(result.focus, full_steps) if result.focus else None
                    batches = list(_batches(focused or self.facts, self.replay, cfg.batch_size, self.per_step,
                                            self.rng))
                    # Check points inside a pass (its last one is the end-of-pass check below).
                    inside = set() if focused else {round(len(batches) * k / cfg.checks_per_pass)
                                                     for k in range(1, cfg.checks_per_pass)}
                    stop, begun = False, result.passes
                    for i, batch in enumerate(batches, 1):
                        loss, tokens = step(model, opt, batch, cfg, self.pad, llm.device, self.start)
                        sched.step()
                        result.losses.append(round(loss, 4))
                        result.tokens += tokens
                        result.steps += 1
                        result.examples += len(batch)
                        bar.update(1)
                        rate = (result.examples - seen) / max(time.perf_counter() - start, 1e-9)
                        bar.set_postfix(loss=f"{loss:.3f}", ex_s=f"{rate:.1f}")
                        result.passes = begun + i / full_steps
                        if i in inside and i < len(batches) and check(result.passes):
                            stop = True
                            break
                    result.epochs = epoch + 1
                    stop = stop or check(result.passes)
                    if save is not None:
                        save(self._state(given, opt, sched, result, before + time.perf_counter() - start,
                                         done=stop or result.epochs == n_epochs))
                    if stop:
                        break
                if llm.device != "cpu" and torch.cuda.is_available():
                    torch.cuda.synchronize()
                result.seconds = before + time.perf_counter() - start
                bar.close()
            finally:
                for h in handles:
                    h.remove()
        return result

    def _focused(self, missed: Sequence[str], full_steps: int) -> list[Any]:
        """A round's training examples: every example of the `missed` facts, and as many of the
        other facts' examples drawn at random (rehearsal, so what came back stays), the round
        made up to at least 1/(2 * checks_per_pass) of a pass with more of them; [] (a whole pass)
        when every fact was missed."""
        cfg, lost = self.cfg, set(missed)
        mine = [x for x in self.facts if x.fact in lost]
        others = [x for x in self.facts if x.fact not in lost]
        if not others:
            return []
        least = cfg.batch_size * math.ceil(full_steps / (2 * cfg.checks_per_pass))
        return mine + self.rng.sample(others, min(len(others), max(len(mine), least - len(mine))))

    def _state(self, mask: dict[str, Any] | None, opt: Any, sched: Any, result: TrainResult, seconds: float, *,
               done: bool) -> dict[str, Any]:
        """Everything `run` needs to continue after the pass just made (see `resume`)."""
        figures = {k: getattr(result, k) for k in ("losses", "steps", "tokens", "epochs", "recalled", "examples",
                                                  "checked_at", "passes", "focus")}
        return {"mask": mask, "params": {n: p.detach().cpu().clone() for n, p in self.params.items()},
                "opt": opt.state_dict(), "sched": sched.state_dict(), "rng": self.rng.getstate(),
                "result": figures, "seconds": seconds, "done": done}

    def _restore(self, state: dict[str, Any], opt: Any, sched: Any, result: TrainResult) -> tuple[bool, float]:
        """Put a saved state back; returns (training had finished, its seconds of training)."""
        import torch

        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(state["params"][n].to(p.device, p.dtype))
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        self.rng.setstate(state["rng"])
        for k, v in state["result"].items():
            setattr(result, k, v)
        result.resumed_from = result.epochs
        return bool(state["done"]), float(state["seconds"])


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The learning rate's multiplier after `step` of `total` planned steps: 1 throughout
    ('constant'), or a half cosine from 1 down to 0.1 ('cosine')."""
    if schedule == "constant" or total <= 1:
        return 1.0
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(step, total) / total))


def answered(llm: Any, examples: Sequence[Any], batch_size: int | None = None) -> list[bool]:
    """Whether each of `examples`' question (`check`: its prompt and answer), asked of the model
    as it is now with greedy decoding, is answered with the fact's value: what the evaluation
    measures, on training questions (never the paraphrases). The model is left in the mode it
    was in."""
    from kupdate.answering.decoding import GENERATION_BATCH, generate, length_batches
    from kupdate.text import hits

    batch_size = batch_size or GENERATION_BATCH
    model = llm.model
    was_training = model.training
    model.eval()
    try:
        got = [""] * len(examples)
        for part in length_batches([len(x.check[0].text) for x in examples], batch_size):
            for i, a in zip(part, generate(llm, [examples[i].check[0] for i in part], max_new_tokens=CHECK_TOKENS,
                                           first_line=True)):
                got[i] = a
    finally:
        model.train(was_training)
    return [hits(a, x.check[1]) for a, x in zip(got, examples)]


def _batches(facts: list[Any], replay: list[Any], size: int, per_step: int, rng: random.Random,
             steps: int | None = None) -> Iterator[list[Any]]:
    """Shuffled batches of `size` facts (similar lengths together, so little padding), each with
    `per_step` replayed exemplars; `steps`: exactly that many batches, cycling over the facts."""
    def epoch() -> list[list[Any]]:
        order = facts[:]
        rng.shuffle(order)
        out = []
        for i in range(0, len(order), size * 8):  # sort within windows of 8 batches
            window = sorted(order[i : i + size * 8], key=lambda x: len(x.prompt_ids) + len(x.target_ids))
            out += [window[j : j + size] for j in range(0, len(window), size)]
        rng.shuffle(out)
        return out

    made = 0
    while facts and (steps is None or made < steps):
        for batch in epoch():
            if steps is not None and made >= steps:
                return
            made += 1
            yield batch + (rng.sample(replay, min(per_step, len(replay))) if per_step else [])
        if steps is None:
            return


