"""A PyTorch MLP on a bundled dataset: loss and accuracy every epoch, a checkpoint every epoch,
and resuming from the last checkpoint when a retry starts again."""

from __future__ import annotations

import argparse

import torch
from common import auc, checkpoint_dir, load, report, save_predictions, seed_everything
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    seed = seed_everything(args.seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    # One thread, one order of float sums: a busy machine otherwise lets the math library pick
    # fewer threads mid-run, and the same seed drifts in the seventh digit.
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x_train, x_val, y_train, y_val = load(args.dataset, seed)
    xt, yt = torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train)
    xv, yv = torch.tensor(x_val, dtype=torch.float32).to(device), torch.tensor(y_val).to(device)
    classes = int(y_train.max()) + 1
    model = nn.Sequential(
        nn.Linear(xt.shape[1], args.hidden), nn.ReLU(), nn.Linear(args.hidden, classes)
    ).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = 0
    folder = checkpoint_dir()
    saved = folder / "mlp.pt" if folder else None
    if saved is not None and saved.exists():  # a retry goes on where the last attempt stopped
        state = torch.load(saved, weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        torch.set_rng_state(state["rng"])
        start = state["epoch"] + 1
        print(f"resumed from epoch {state['epoch']}", flush=True)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start, args.epochs):
        model.train()
        order = torch.randperm(len(xt))
        total = 0.0
        for i in range(0, len(xt), args.batch_size):
            batch = order[i : i + args.batch_size]
            x, y = xt[batch].to(device), yt[batch].to(device)
            optimiser.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            logits = model(xv)
            val_loss = loss_fn(logits, yv).item()
            probs = logits.softmax(dim=1).cpu().numpy()
        report(
            step=epoch,
            train_loss=total / len(xt),
            val_loss=val_loss,
            val_acc=(probs.argmax(1) == y_val).mean(),
            val_auc=auc(y_val, probs),
        )
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            tmp = saved.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "rng": torch.get_rng_state(),
                    "epoch": epoch,
                },
                tmp,
            )
            tmp.replace(saved)
    save_predictions(y_val, probs)


if __name__ == "__main__":
    main()
