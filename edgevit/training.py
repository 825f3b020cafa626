"""The one training loop and weight cache of the small models edgevit trains itself (the tiny MobileViT on
digits, the MoE-ViT presets, the Fashion-MNIST models and their class-split sub-models): seeded, single-threaded, AdamW with a one-cycle schedule, weights cached by a
key that changes with anything that would change them."""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def fit(model, n: int, batch_loss: Callable, epochs: int, batch: int, lr: float, seed: int, warmup: float = 0.3,
        log: Callable | None = None) -> None:
    """Train ``model`` in place for ``epochs`` passes over ``n`` examples in shuffled batches of ``batch``
    (the last partial batch is dropped), then put it in eval mode.

    ``batch_loss(model, idx)`` returns the loss of the examples at indices ``idx`` (a tensor). The shuffle is
    drawn from ``seed``, so a run repeats exactly on one thread. The learning rate rises for the first ``warmup``
    share of the steps, then anneals; ``log``, if given, receives each epoch's mean loss as a line of text.
    """
    import torch

    torch.set_num_threads(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    per_epoch = n // batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * per_epoch, pct_start=warmup)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for k in range(per_epoch):
            loss = batch_loss(model, order[k * batch:(k + 1) * batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {total / per_epoch:.4f}")
    model.eval()


def cached(build: Callable, path: Path, train: Callable):
    """``build()`` with the weights stored at ``path``, or trained by ``train(model)`` and stored there first.

    ``path`` must name the configuration (a hash of the code and settings that make the weights): a stale file
    is never reused because its name no longer matches. The model comes back in eval mode.
    """
    import torch

    model = build()
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model.eval()
    train(model)
    partial = path.with_suffix(".partial")
    torch.save(model.state_dict(), partial)
    partial.replace(path)  # never a half-written file under the real name
    return model.eval()
