"""Measure the effect of each convention where we differ from the official Auto Seg-Loss code.

docs/paper.md ("Where we deviate, and why") quotes this script's output. Every number is
computed here, in float64, on fixed seeds; "official" means the official release's arithmetic
as docs/paper.md describes it, re-implemented below from that description (not copied):

1. region means over the metric's own class set (official: all C classes);
2. BF1 class set: classes with a target or a predicted boundary (official: target boundary);
3. BIoU band from the boundaries of all classes (official VOC configs: non-background only);
4. BF1 counts at valid pixels only (official: every pixel; the ignore value is an extra class
   whose own boundary is dropped);
5. eps as a clamp, I / max(U, 1e-6) (official: I / (U + 1e-8));
6. the FWIoU preset (the training log's theta; the released config repeats the BIoU theta);
7. the presets at full precision (before: rounded to 5 significant digits);
8. native kernels vs eager path, at exact ties and without.

Inputs: VOC-like synthetic batches (21 classes, a large background 0, blocky objects, an
ignored strip) and, for 4, the real CamVid val labels when present.

Run: .venv/bin/python bench/conventions.py
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from autoloss_ray import SurrogateLoss, evaluate, native
from autoloss_ray.losses.parameterizations import evaluate_table, get_parameterization
from autoloss_ray.losses.presets import PRESETS, control_points_to_theta, preset_theta
from autoloss_ray.metrics import bf1_counts, boundary_band

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "data" / "camvid"
C = 21
IGNORE = 255
torch.set_default_dtype(torch.float64)


def voc_like(seed: int, n: int = 2, h: int = 96, w: int = 128, classes: int = 4,
             noise: float = 2.0):
    """target [N,H,W] (background 0, a few blocky objects of ``classes`` of the C classes,
    an ignored strip at object edges as in VOC), logits [N,C,H,W] float64 near the target."""
    g = torch.Generator().manual_seed(seed)
    t = torch.zeros(n, h, w, dtype=torch.int64)
    for i in range(n):
        ids = torch.randperm(C - 1, generator=g)[:classes] + 1
        for c in ids.tolist():
            y0 = int(torch.randint(0, h - 24, (1,), generator=g))
            x0 = int(torch.randint(0, w - 24, (1,), generator=g))
            hh, ww = (int(v) for v in torch.randint(12, 40, (2,), generator=g))
            t[i, y0:y0 + hh, x0:x0 + ww] = c
    t[:, :4, :] = IGNORE
    z = noise * torch.randn(n, C, h, w, generator=g)
    z.scatter_add_(1, torch.where(t == IGNORE, 0, t).unsqueeze(1),
                   torch.full((n, 1, h, w), 3.0))
    return z, t


def curve(name: str, key: str, points=None):
    par = "bezier1" if name == "bf1" else "bezier"
    pts = PRESETS[name][key] if points is None else points
    th = torch.tensor(control_points_to_theta(pts, par))
    return get_parameterization(par).table(th)


def region_stats(z, t, name):
    """I_c, U_c [C] (valid pixels), the soft region statistics of docs/paper.md."""
    p = torch.softmax(z, 1)
    v = (t != IGNORE).unsqueeze(1).to(z.dtype)
    y = F.one_hot(torch.where(t == IGNORE, 0, t), C).permute(0, 3, 1, 2).to(z.dtype) * v
    ha = evaluate_table(curve(name, "and"), p)
    ho = evaluate_table(curve(name, "or"), p)
    inter = (ha * y * v).sum((0, 2, 3))
    union = ((ho + y - ho * y) * v).sum((0, 2, 3))
    return inter, union


def grad(fn, z):
    x = z.clone().requires_grad_(True)
    val = fn(x)
    (g,) = torch.autograd.grad(val, x)
    return float(val.detach()), g


def main() -> None:
    print(f"torch {torch.__version__}, native kernels: {native.available()}, float64")
    z, t = voc_like(0, noise=0.4)  # confident logits: argmax holds few classes
    miou = SurrogateLoss.from_preset("miou", num_classes=C)

    # 1. region means: ours over the metric's own class set, official over all C -------------
    print("\n1. mIoU surrogate, class set (preset miou, 2 images 96x128, C=21, logits "
          "0.4 N(0,1) + 3 on the target class)")
    with torch.no_grad():
        pred = z.argmax(1)
    present = torch.zeros(C, dtype=torch.bool)
    present[t[t != IGNORE].unique()] = True
    present[pred[t != IGNORE].unique()] = True
    k = int(present.sum())
    ours, g_ours = grad(lambda x: miou.score(x, t), z)

    def official_all_c(x):  # mean over all C classes, eps as our clamp (isolates the class set)
        inter, union = region_stats(x, t, "miou")
        return (inter / union.clamp(min=1e-6)).mean()

    off, g_off = grad(official_all_c, z)
    print(f"   classes in target or argmax: k={k} of C={C}; ours {ours:.12f}, "
          f"official {off:.12f}")
    print(f"   official/ours = {off / ours:.15f}, k/C = {k / C:.15f}; "
          f"max|g_official - (k/C) g_ours| = {float((g_off - k / C * g_ours).abs().max()):.2e} "
          f"(max|g_ours| = {float(g_ours.abs().max()):.2e})")

    # 5. eps: clamp vs added -----------------------------------------------------------------
    def official_eps(x):
        inter, union = region_stats(x, t, "miou")
        return (inter / (union + 1e-8))[present].mean()

    off_eps, g_eps = grad(official_eps, z)
    print("\n5. eps: I / max(U, 1e-6) (ours) vs I / (U + 1e-8) (official), same class set")
    print(f"   score ours {ours:.15f}, official {off_eps:.15f}, |diff| = {abs(ours - off_eps):.2e}"
          f"; max|grad diff| = {float((g_eps - g_ours).abs().max()):.2e}")

    # 2. BF1 class set ---------------------------------------------------------------------
    print("\n2. BF1 class set: target or predicted boundary (ours) vs target boundary (official)")
    pred_np, t_np = pred.numpy().copy(), t.numpy()
    absent = min(set(range(C)) - set(np.unique(t_np).tolist()))
    pred_np[:, 60:70, 100:110] = absent  # a class the target lacks: a predicted boundary only
    counts = bf1_counts(pred_np, t_np, C).double()
    n_p, n_g, m_p, m_g = counts
    prec = torch.where(n_p > 0, m_p / n_p.clamp(min=1), 0.0)
    rec = torch.where(n_g > 0, m_g / n_g.clamp(min=1), 0.0)
    f1 = torch.where(prec + rec > 0, 2 * prec * rec / (prec + rec).clamp(min=1e-300), 0.0)
    ours_set, off_set = (n_p + n_g) > 0, n_g > 0
    e_ours, e_off = float(f1[ours_set].mean()), float(f1[off_set].mean())
    print(f"   exact BF1: classes ours {int(ours_set.sum())}, official {int(off_set.sum())}; "
          f"ours {e_ours:.6f}, official {e_off:.6f}; ratio ours/official = {e_ours / e_off:.6f} "
          f"= {int(off_set.sum())}/{int(ours_set.sum())} = "
          f"{int(off_set.sum()) / int(ours_set.sum()):.6f}")
    bf1 = SurrogateLoss.from_preset("bf1", num_classes=C)
    onehot = 1e3 * F.one_hot(torch.from_numpy(pred_np), C).permute(0, 3, 1, 2).double()
    os.environ["AUTOLOSS_RAY_NATIVE"] = "0"
    s_ours = float(bf1.score(onehot, t))
    print(f"   surrogate (one-hot logits): score {s_ours:.6f} = exact "
          f"{evaluate(pred_np, t_np, C)['bf1']:.6f} (a class without a target boundary has "
          "recall 0, F1 0: the score scales by k_official/k_ours)")

    # 3. BIoU band -------------------------------------------------------------------------
    print("\n3. BIoU band: all classes (default) vs foreground (official VOC, drop_bg)")
    for seed in (0, 1, 2):
        zs, ts = voc_like(seed, noise=1.0)
        ps = zs.argmax(1)
        b_all = boundary_band(ts, C)
        b_fg = boundary_band(ts, C, boundary_classes="foreground")
        e_all = evaluate(ps, ts, C)
        e_fg = evaluate(ps, ts, C, boundary_classes="foreground")
        s_all = float(SurrogateLoss.from_preset("biou", num_classes=C).score(zs, ts))
        s_fg = float(SurrogateLoss.from_preset("biou", num_classes=C,
                                               boundary_classes="foreground").score(zs, ts))
        print(f"   seed {seed}: band pixels all {int(b_all.sum())}, foreground "
              f"{int(b_fg.sum())}; exact BIoU {e_all['biou']:.4f} -> {e_fg['biou']:.4f}, "
              f"BF1 {e_all['bf1']:.4f} -> {e_fg['bf1']:.4f}; preset-biou surrogate score "
              f"{s_all:.4f} -> {s_fg:.4f}")
    print("   (here the ignored strip at the top borders background only: its edge is a "
          "background boundary, in the 'all' band and not in the 'foreground' one)")

    # 4. BF1 at valid pixels only ------------------------------------------------------------
    print("\n4. BF1 counting: valid pixels only (ours) vs every pixel (official)")
    cases = []
    files = sorted((CAMVID / "valannot").glob("*.png"))[:8] if CAMVID.is_dir() else []
    if files:
        from PIL import Image
        tgt = np.stack([np.asarray(Image.open(f)) for f in files]).astype(np.int64)
        rng = np.random.default_rng(0)
        prd = np.roll(tgt, (3, -2), axis=(1, 2))  # shifted labels, unlabelled -> a class
        prd[prd == 11] = rng.integers(0, 11, int((prd == 11).sum()))
        cases.append((f"CamVid val ({len(files)} images, 11 classes + unlabelled 11)", prd,
                      tgt, 12, 11, 11))
    cases.append(("VOC-like synthetic", pred_np, t_np, C, IGNORE, C))
    for label, prd, tgt, n_cls, ign, nc in cases:  # nc: the real classes 0..nc-1
        ours_v = evaluate(prd, tgt, n_cls, ignore_index=ign)["bf1"]
        # official: the ignore value becomes an extra class whose boundary is dropped; every
        # pixel counts
        t2 = np.where(tgt == ign, nc, tgt)
        p2 = np.where(prd == ign, nc, prd)
        cnt = bf1_counts(p2, t2, nc + 1, ignore_index=None).double()[:, :nc]
        n_p, n_g, m_p, m_g = cnt
        prec = torch.where(n_p > 0, m_p / n_p.clamp(min=1), 0.0)
        rec = torch.where(n_g > 0, m_g / n_g.clamp(min=1), 0.0)
        f1 = torch.where(prec + rec > 0, 2 * prec * rec / (prec + rec).clamp(min=1e-300), 0.0)
        off_v = float(f1[(n_p + n_g) > 0].mean())
        print(f"   {label}: exact BF1 ours {ours_v:.4f}, every pixel {off_v:.4f} "
              f"(diff {ours_v - off_v:+.4f})")

    # 6. FWIoU preset source -------------------------------------------------------------------
    print("\n6. FWIoU preset: training-log theta (ours) vs the released config (= BIoU theta)")
    x = torch.linspace(0, 1, 100001)
    for key in ("and", "or"):
        d = (evaluate_table(curve("fwiou", key), x) - evaluate_table(curve("biou", key), x))
        print(f"   h_{key}: max|h_log - h_config| = {float(d.abs().max()):.4f}")
    f_log = float(SurrogateLoss.from_preset("fwiou", num_classes=C).score(z, t))
    _, th_b = preset_theta("biou")
    f_cfg = float(SurrogateLoss("fwiou", num_classes=C, theta=th_b).score(z, t))
    print(f"   FWIoU surrogate score on the batch: log theta {f_log:.4f}, config theta "
          f"{f_cfg:.4f}")

    # 7. presets at full precision ---------------------------------------------------------------
    print("\n7. presets rounded to 5 significant digits (before) vs full precision (now)")
    rounded = {"miou": {"and": (5.697e-4, 0.64372, 0.33859, 0.70554, 0.62528, 0.77955),
                        "or": (0.69038, 0.013063, 0.83417, 0.96243, 0.94300, 0.98004)},
               "biou": {"and": (3.654e-4, 0.98417, 0.96949, 0.99234, 0.98833, 0.99555),
                        "or": (0.35461, 0.26722, 0.56055, 0.43529, 0.56543, 0.60145)}}
    for name, curves in rounded.items():
        for key, pts in curves.items():
            new, old = PRESETS[name][key], pts
            lo, hi = sorted((new[2], old[2]))
            xm = torch.tensor([(lo + hi) / 2])
            _, d_new = evaluate_table(curve(name, key), xm, derivative=True)
            _, d_old = evaluate_table(curve(name, key, old), xm, derivative=True)
            dv = evaluate_table(curve(name, key), x) - evaluate_table(curve(name, key, old), x)
            print(f"   {name}.{key}: junction moved {abs(new[2] - old[2]):.1e}; slope between "
                  f"them {float(d_new):.4g} (now) vs {float(d_old):.4g} (rounded), ratio "
                  f"{max(float(d_new / d_old), float(d_old / d_new)):.1f}x; "
                  f"max|h_now - h_rounded| = {float(dv.abs().max()):.1e}")

    # 8. native vs eager --------------------------------------------------------------------------
    os.environ.pop("AUTOLOSS_RAY_NATIVE", None)
    if not native.available():
        print("\n8. native kernels unavailable: skipped")
        return
    print("\n8. native vs eager (float64, presets, r=5): max |value diff|, max |grad diff|, "
          "elements with |grad diff| > 1e-9")
    g = torch.Generator().manual_seed(0)
    zr = 3 * torch.randn(2, C, 48, 64, generator=g)
    tr = torch.randint(0, C, (2, 12, 16), generator=g).repeat_interleave(4, 1) \
        .repeat_interleave(4, 2)
    zt = torch.round(torch.randn(2, C, 12, 16, generator=g)).repeat_interleave(4, 2) \
        .repeat_interleave(4, 3)  # blocky rounded logits: many equal probabilities
    zt[:, :, :8, :8] = 0.0  # and all-equal logits
    zb = (torch.rand(2, C, 12, 16, generator=g) < 0.5).double().repeat_interleave(4, 2) \
        .repeat_interleave(4, 3)  # blocky {0, 1} logits: exact ties inside the pooling windows
    for label, zz in (("random logits", zr), ("blocky rounded logits", zt),
                      ("blocky {0,1} logits", zb)):
        for metric in ("miou", "fwiou", "biou", "macc", "gacc", "bf1"):
            loss = SurrogateLoss.from_preset(metric, num_classes=C)
            res = []
            for flag in ("1", "0"):
                os.environ["AUTOLOSS_RAY_NATIVE"] = flag
                res.append(grad(lambda x: loss(x, tr), zz))  # noqa: B023 - called at once
            dv = abs(res[0][0] - res[1][0])
            dg = (res[0][1] - res[1][1]).abs()
            print(f"   {label:30s} {metric:5s}: value {dv:.1e}, grad {float(dg.max()):.1e}, "
                  f"{int((dg > 1e-9).sum())} of {dg.numel()} elements (max|grad| "
                  f"{float(res[1][1].abs().max()):.1e})")
    os.environ.pop("AUTOLOSS_RAY_NATIVE", None)


if __name__ == "__main__":
    main()
