"""digits-gan-generator and digits-gan-discriminator: one auxiliary-classifier GAN run, two models.

The generator is scored by the committed digits-mlp classifier (mean top-class probability and class
coverage of 1,000 samples), and the discriminator is tested on samples of the exported generator: the
zoo entries name these needs, and the build checks and orders them (training/zoo.py)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import GaussianMixture
from torch.nn import functional
from tqdm.auto import tqdm

from training import evaluate
from training.datasets import Split, load_tabular, split_indices
from training.export import ExportSpec
from training.gan import PIXEL_MAX, Discriminator, GANConfig, Generator, RealFake, class_code
from training.models import Servable, Standardize
from training.recipe import Context, Trained, batch_dynamic, tensor, tensor_spec
from training.recipes.classifier import calibrated_scorer, fit_calibration
from training.train import History, TrainSettings, seed_everything

EVAL_SAMPLES, EVAL_SEED, SELECT_SEED, DISC_VAL_SEED, DISC_TEST_SEED = 1000, 1234, 99, 7, 8


def committed(ctx: Context, name: str) -> Path:
    """A zoo model this recipe needs; the zoo entry names it, so the build has checked it exists."""
    return ctx.output / name / "1" / "model.onnx"


def scorer_path(ctx: Context) -> Path:
    return committed(ctx, "digits-mlp")


def discriminator_test_set(
    x: np.ndarray, test_rows: np.ndarray, generator: Path, latent_dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Real test digits (label 1) + as many samples of the exported generator (label 0)."""
    fake = evaluate.generator_images(generator, len(test_rows), DISC_TEST_SEED, latent_dim)
    return np.concatenate([x[test_rows], fake]), np.r_[np.ones(len(test_rows)), np.zeros(len(fake))].astype(
        np.int64
    )


@dataclass
class GANRun:
    generator: Generator
    disc: Discriminator
    cfg: GANConfig
    settings: TrainSettings
    history: History
    split: Split
    x: np.ndarray
    steps_per_epoch: int


_RUNS: dict[tuple[int, bool, str], GANRun] = {}


def sample(gen: Generator, n: int, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal((n, gen.cfg.latent_dim)).astype(np.float32)
    with torch.no_grad():
        return gen(tensor(noise)).numpy()


def run_gan(ctx: Context, cfg: GANConfig, settings: TrainSettings, steps_per_epoch: int) -> GANRun:
    key = (ctx.seed, ctx.quick, str(ctx.output))
    if key in _RUNS:  # generator and discriminator come from the same run
        return _RUNS[key]
    data = load_tabular("digits")
    x, y = data.x, data.y
    split = split_indices(len(y), y, seed=ctx.seed)  # the digits-mlp split: train rows only
    settings = replace(settings, epochs=ctx.scale(settings.epochs, 1), seed=ctx.seed)
    steps = ctx.scale(steps_per_epoch, 20)
    gen_t = seed_everything(ctx.seed)
    g, d = Generator(cfg), Discriminator(cfg)
    betas = (0.5, 0.999)
    opt_g = torch.optim.Adam(g.parameters(), lr=settings.learning_rate, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=settings.learning_rate, betas=betas)
    xt, yt = tensor(x[split.train]), tensor(y[split.train])
    scorer = scorer_path(ctx)
    hist = History("mean top-class probability (digits-mlp)", x_label=f"epoch ({steps} steps)")
    best, best_state = -1.0, copy.deepcopy(g.state_dict())
    bs = settings.batch_size
    for epoch in tqdm(range(settings.epochs), desc=ctx.name, leave=False, disable=None):
        g.train()
        d.train()
        d_losses, g_losses = [], []
        for _ in range(steps):
            idx = torch.randint(0, len(xt), (bs,), generator=gen_t)
            real, labels = xt[idx], yt[idx]
            noise = torch.randn(bs, cfg.latent_dim, generator=gen_t)
            code = class_code(noise, cfg.n_classes).argmax(dim=1)
            fake = g(noise)
            adv_r, aux_r = d(real)
            adv_f, aux_f = d(fake.detach())
            d_loss = (
                functional.binary_cross_entropy_with_logits(
                    adv_r, torch.full_like(adv_r, 0.9)
                )  # label smoothing
                + functional.binary_cross_entropy_with_logits(adv_f, torch.zeros_like(adv_f))
                + functional.cross_entropy(aux_r, labels)
                + functional.cross_entropy(aux_f, code)
            )
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            adv_g, aux_g = d(fake)
            g_loss = functional.binary_cross_entropy_with_logits(
                adv_g, torch.ones_like(adv_g)
            ) + functional.cross_entropy(aux_g, code)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            d_losses.append(d_loss.item())
            g_losses.append(g_loss.item())
        g.eval()
        score = evaluate.image_scores(sample(g, 500, SELECT_SEED), scorer)["mean_top_class_probability"]
        hist.train_loss.append(float(np.mean(d_losses)))
        hist.val_loss.append(float(np.mean(g_losses)))
        hist.val_metric.append(score)
        print(f"{ctx.name} epoch {epoch + 1}/{settings.epochs}: D {hist.train_loss[-1]:.3f} "
              f"G {hist.val_loss[-1]:.3f} digits-mlp confidence {score:.4f}", flush=True)  # fmt: skip
        if score > best:  # checkpoint selection on noise the evaluation never uses
            best, best_state, hist.best_epoch = score, copy.deepcopy(g.state_dict()), epoch
    g.load_state_dict(best_state)
    g.eval()
    d.eval()
    run = GANRun(g, d, cfg, settings, hist, split, x, steps)
    _RUNS[key] = run
    return run


def _training_record(run: GANRun) -> dict[str, Any]:
    return run.settings.record() | {
        "steps_per_epoch": run.steps_per_epoch,
        "adam_betas": [0.5, 0.999],
        "loss": "ACGAN: BCE real/fake (real labels smoothed to 0.9) + CE auxiliary class, both players",
        "checkpoint": "epoch whose 500 samples (noise seed 99) digits-mlp classifies most confidently",
        "curves": "train = discriminator loss, validation = generator loss",
    }


def train_generator(ctx: Context, cfg: GANConfig, settings: TrainSettings, steps_per_epoch: int) -> Trained:
    run = run_gan(ctx, cfg, settings, steps_per_epoch)
    scorer = scorer_path(ctx)
    n = ctx.scale(EVAL_SAMPLES, 200)
    # Baseline: a scikit-learn Gaussian mixture fitted to the same training digits, sampled alike.
    gmm = GaussianMixture(n_components=10, covariance_type="full", reg_covar=0.1, random_state=ctx.seed).fit(
        run.x[run.split.train]
    )
    gmm.covariances_ = (
        gmm.covariances_ + gmm.covariances_.transpose(0, 2, 1)
    ) / 2  # exact symmetry for sampling
    gmm_images = np.clip(gmm.sample(n)[0], 0, PIXEL_MAX).astype(np.float32)
    baseline: dict[str, Any] = {
        "name": "GaussianMixture(10 components, full covariance, reg_covar 0.1), clipped to 0..16"
    }
    baseline |= evaluate.image_scores(gmm_images, scorer)

    def score(path: Path) -> dict[str, Any]:
        test = evaluate.generator_scores(path, scorer, n, EVAL_SEED, cfg.latent_dim)
        return {
            "metrics": {
                "test": test | {"samples": n, "noise_seed": EVAL_SEED, "scored_by": "digits-mlp version 1"},
                "baseline": baseline,
            }
        }

    z = cfg.latent_dim
    spec = ExportSpec(
        ["noise"], ["images"], (torch.randn(4, z),), (torch.randn(9, z),), batch_dynamic("noise", "images")
    )
    manifest = {
        "inputs": [tensor_spec("noise", "FP32", [-1, z])],
        "outputs": [tensor_spec("images", "FP32", [-1, 64])],
        "image_shape": [8, 8],
        "latent_dim": z,
        "pixel_range": [0, 16],
        "noise": "standard normal; the class drawn is argmax(noise[:, :10]), so classes are uniform",
        "classes": [str(c) for c in range(10)],
        "preprocessing": {"output": "sigmoid * 16 in the graph: the raw digits scale", "in_graph": True},
        "architecture": {"type": "acgan_generator_mlp"} | vars(cfg),
        "split": run.split.describe() | {"note": "trained on the digits-mlp training rows only"},
        "training": _training_record(run),
    }
    return Trained(run.generator, spec, manifest, run.history, score)


def train_discriminator(
    ctx: Context, cfg: GANConfig, settings: TrainSettings, steps_per_epoch: int
) -> Trained:
    run = run_gan(ctx, cfg, settings, steps_per_epoch)
    x, split = run.x, run.split

    def real_vs_fake(rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        fake = sample(run.generator, len(rows), seed)
        return np.concatenate([x[rows], fake]), np.r_[np.ones(len(rows)), np.zeros(len(rows))].astype(
            np.int64
        )

    net = RealFake(run.disc).eval()
    prep = Standardize(torch.zeros(64), torch.ones(64))  # the discriminator scales by 1/16 itself
    xv, yv = real_vs_fake(split.val, DISC_VAL_SEED)
    xs, ys = discriminator_test_set(x, split.test, committed(ctx, "digits-gan-generator"), cfg.latent_dim)
    with torch.no_grad():
        temperature, val_ece = fit_calibration(net(tensor(xv)), yv)
    xb, yb = real_vs_fake(split.train, DISC_TEST_SEED + 100)
    clf = LogisticRegression(max_iter=3000).fit(xb / PIXEL_MAX, yb)
    baseline = {
        "name": "LogisticRegression real-vs-generated (trained on training rows + fresh samples)",
        "accuracy": float(clf.score(xs / PIXEL_MAX, ys)),
    }
    servable = Servable(net, prep, "binary", temperature).eval()
    spec = ExportSpec(
        ["input"], ["logits", "probabilities"], (tensor(xs[:4]),), (tensor(xs[3:10]),),
        batch_dynamic("input", "logits", "probabilities"),
    )  # fmt: skip
    manifest = {
        "inputs": [tensor_spec("input", "FP32", [-1, 64])],
        "outputs": [tensor_spec("logits", "FP32", [-1, 1]), tensor_spec("probabilities", "FP32", [-1, 1])],
        "labels": ["generated", "real"],
        "feature_names": [f"pixel_{r}_{c}" for r in range(8) for c in range(8)],
        "preprocessing": {"scale": "x / 16 in the graph: send raw pixels 0..16", "in_graph": True},
        "architecture": {"type": "acgan_discriminator_mlp", "served_head": "real/fake only"} | vars(cfg),
        "split": split.describe()
        | {
            "evaluation": "test = the digits test rows (real) + as many samples of digits-gan-generator/1 "
            f"(numpy default_rng({DISC_TEST_SEED}).standard_normal noise); calibration on validation rows "
            f"+ samples (seed {DISC_VAL_SEED})",
            "generated_test_seed": DISC_TEST_SEED,
        },
        "training": _training_record(run),
    }
    score = calibrated_scorer(xs, ys, temperature, baseline, val_ece)
    return Trained(servable, spec, manifest, run.history, score)
