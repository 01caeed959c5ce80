"""MODEL_CARD.md and loss_curve.png written into a bundle."""
from __future__ import annotations

import json
from pathlib import Path

from omniforge_shared.bundle import Bundle


def plot_loss_curve(history: list[tuple[int, str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, style in (("loss", "-"), ("val_loss", "o-")):
        points = sorted((step, value) for step, n, value in history if n == name)
        if points:
            label = "train loss (per step)" if name == "loss" else "val loss"
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=label, markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_model_card(bundle: Bundle, history: list[tuple[int, str, float]], metrics_csv: Path | None = None) -> Path:
    m = bundle.manifest
    plot_loss_curve(history, bundle.path / "loss_curve.png")
    rows = "\n".join(f"| {k} | {v:.6g} |" if isinstance(v, (int, float)) else f"| {k} | {v} |"
                     for k, v in m.get("metrics", {}).items())
    cfg = m["architecture"]["config"]
    training = m.get("training", {})
    data = m.get("data", {})
    card = f"""# {m['name']} {m['version']}

A {m['architecture']['family'].upper()} {m['task']} model ({m['architecture'].get('params', 0):,} parameters),
trained by the omniforge `{m.get('recipe', 'text-lm')}` recipe{f" in job {m['job_id']}" if m.get('job_id') else ''}.

![loss curve](loss_curve.png)

## Metrics

| metric | value |
| --- | --- |
{rows}

## Architecture

`{json.dumps(cfg)}`

## Training

- tokens seen: {training.get('tokens_seen', 'n/a')}
- wall time: {training.get('wall_s', 'n/a')} s on {training.get('hardware', 'n/a')}
- code version: {m.get('code_version', 'unknown')}

## Data

- dataset: {data.get('dataset', 'files')} (content hash `{data.get('content_hash', 'n/a')}`)
- counts: `{json.dumps(data.get('counts', {}))}`
"""
    if bundle.has("sample-grid"):
        card += f"\n## Samples\n\n![samples]({bundle.file('sample-grid').name})\n"
    if metrics_csv is not None and Path(metrics_csv).exists():
        card += f"\nThe full metrics history is in the job's `{Path(metrics_csv).name}` and TensorBoard events.\n"
    path = bundle.path / "MODEL_CARD.md"
    path.write_text(card)
    return path
