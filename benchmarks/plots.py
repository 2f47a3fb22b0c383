"""PNG plots for the serving, job and summary results (matplotlib, Agg backend).

Not a CLI; the benchmark scripts call these after writing their JSON.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path


@contextmanager
def figure(path: Path, ncols: int, figsize: tuple, dpi: int = 100):
    """A row of `ncols` axes; on leaving, laid out and saved to `path`. Closed either way:
    pyplot keeps every open figure alive."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=figsize)
    try:
        yield axes
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def log2_axes(axes, xlabel: str, logy: bool = False, legend: int | None = 7) -> None:
    """Batch sizes and concurrencies are powers of two: a log2 x axis, a light grid and
    (legend: its font size, None for none) a legend on each axis."""
    for ax in axes:
        ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if legend:
            ax.legend(fontsize=legend)


def batch_lines(ax_tp, ax_lat, name: str, rows: list[dict]) -> None:
    """Images/s vs batch, and p50 latency with a band up to p99, one line per backend."""
    xs = [r["batch"] for r in rows]
    ax_tp.plot(xs, [r["images_per_s"] for r in rows], marker="o", label=name)
    ax_lat.plot(xs, [r["latency_ms"]["p50"] for r in rows], marker="o", label=f"{name} p50")
    ax_lat.fill_between(xs, [r["latency_ms"]["p50"] for r in rows],
                        [r["latency_ms"]["p99"] for r in rows], alpha=0.15)


def _pa_lines(ax_tp, ax_lat, rows, label):
    """Throughput and p50/p95/p99 vs concurrency, one line per batch size."""
    for b in sorted({r["batch"] for r in rows}):
        pts = sorted((r for r in rows if r["batch"] == b and "images_per_s" in r),
                     key=lambda r: r["concurrency"])
        if not pts:
            continue
        xs = [r["concurrency"] for r in pts]
        (line,) = ax_tp.plot(xs, [r["images_per_s"] for r in pts], marker="o",
                             label=f"{label} b{b}")
        if ax_lat is not None:  # one colour per batch size; the style tells the percentile
            for p, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
                ax_lat.plot(xs, [r["latency_ms"][p] for r in pts], style, marker=".",
                            color=line.get_color(), label=f"{label} b{b} {p}")


def plot_serving(p: dict, path: Path) -> None:
    with figure(path, 3, (16, 4.5)) as (a1, a2, a3):
        _pa_lines(a1, a2, p["perf_analyzer"]["adgen"], "adgen")
        _pa_lines(a1, None, p["perf_analyzer"]["generator"], "generator")
        log2_axes((a1, a2), "concurrency (requests in flight)")
        a1.set_ylabel("images/s")
        a1.set_title(f"perf_analyzer throughput ({p['machine']['name']})")
        a2.set_ylabel("latency ms")
        a2.set_yscale("log")
        a2.set_title("adgen latency percentiles")
        rows = [r for r in p["dynamic_batching"]["rows"] if r.get("score")]
        labels = [r["label"].replace(", ", "\n", 1) for r in rows]
        colors = ["tab:green" if r["label"] == p["dynamic_batching"]["pick"] else
                  "tab:blue" if r["committed"] else "tab:gray" for r in rows]
        a3.barh(range(len(rows)), [r["score"] for r in rows], color=colors)
        a3.set_yticks(range(len(rows)), labels, fontsize=6)
        a3.invert_yaxis()
        a3.set_xlabel("score: geo-mean images/s (green = pick, blue = committed)")
        a3.set_title("dynamic-batching sweep")


def plot_job(p: dict, path: Path) -> None:
    with figure(path, 2, (12, 4)) as (a1, a2):
        m = p["median_images_per_s"]
        a1.bar(["adgen client alone", "adgen generate (files)"],
               [m["triton_client"], m["adgen_generate"]], color=["tab:blue", "tab:orange"])
        for s in p.get("settings") or []:
            a1.bar(f"generate b{s['batch']} c{s['concurrency']}", s["images_per_s"],
                   color="tab:gray")
        a1.set_ylabel("images/s")
        a1.set_title(f"end-to-end job ({p['machine']['name']})")
        a1.tick_params(axis="x", labelsize=7, rotation=15)
        prof = p.get("profile")
        if prof:
            items = list(prof["stages_ms_per_image"].items())
            a2.barh([k for k, _ in items], [v for _, v in items])
            a2.set_xscale("symlog", linthresh=0.01)
            a2.set_xlabel("ms per image (summed over threads)")
            a2.set_title("where the time goes")
            a2.tick_params(axis="y", labelsize=7)


def plot_summary(parts: dict, path: Path) -> None:
    """One figure from one run: backends vs batch, serving vs concurrency, latency, job."""
    with figure(path, 3, (16, 4.5)) as axes:
        _summary(parts, *axes)
        for ax in axes:
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)


def _summary(parts: dict, a1, a2, a3) -> None:
    b = parts.get("backends")
    if b:
        for name, rows in b["generator"].items():
            a1.plot([r["batch"] for r in rows], [r["images_per_s"] for r in rows], marker="o",
                    label=name)
        up = b.get("upsampler") or {}
        if up.get("rows"):
            a1.plot([r["batch"] for r in up["rows"]], [r["images_per_s"] for r in up["rows"]],
                    marker="s", ls="--", color="k", label="upsampler 64→256 (ort fp32)")
        a1.set_xscale("log", base=2)
        a1.set_xlabel("batch")
    a1.set_ylabel("images/s")
    a1.set_title("generator backends, in-process")
    s = parts.get("serving")
    if s:
        _pa_lines(a2, a3, s["perf_analyzer"]["adgen"], "adgen")
        iv = s["inprocess_vs_triton"]
        a2.axhline(max(iv["median_images_per_s"]["adgen_inprocess"],
                       iv["median_images_per_s"].get("adgen_inprocess_merged", 0)),
                   color="k", ls="--", lw=1, label="in-process (better batch)")
        a2.axhline(iv["median_images_per_s"]["adgen_triton_client"], color="tab:red", ls="--",
                   lw=1, label=f"Triton client b{iv['batch']} c{iv['concurrency']}")
    j = parts.get("job")
    if j:
        a2.axhline(j["median_images_per_s"]["adgen_generate"], color="tab:green", ls="-.",
                   lw=1, label="adgen generate (PNG files)")
    j2 = parts.get("job256")
    if j2 and "skipped" not in j2:
        a2.axhline(j2["median_images_per_s"]["256 px png"], color="tab:purple", ls=":",
                   lw=1.2, label="adgen generate --size 256 (PNG files)")
    a2.set_xscale("log", base=2)
    a2.set_xlabel("concurrency")
    a2.set_ylabel("images/s")
    a2.set_title("adgen through Triton")
    a3.set_xscale("log", base=2)
    a3.set_yscale("log")
    a3.set_xlabel("concurrency")
    a3.set_ylabel("latency ms")
    a3.set_title("adgen latency p50 / p95 / p99")


def plot_gpu(p: dict, path: Path) -> None:
    with figure(path, 2, (12, 4.5)) as (a1, a2):
        for name, rows in p["generator"].items():
            if rows:
                batch_lines(a1, a2, name, rows)
        log2_axes((a1, a2), "batch", logy=True)
        a1.set_ylabel("images/s")
        a1.set_title(f"generator on {p['machine'].get('gpu', p['device'])}")
        a2.set_ylabel("latency ms (p50, band to p99)")
