"""Train small DeepLabv3+ (MobileNetV2) and MSI-Net on a procedural set built from real photographs.

No pretrained weights can be downloaded here, so INT8/FP16 accuracy would otherwise be measured on random
weights only, whose class scores are near ties. This script trains small widths of both models on two CPU cores
(DeepLabv3+ about 33 minutes, MSI-Net about 3), reproducibly (fixed seeds, two threads, a fixed number of steps),
and writes:
- benchmarks/checkpoints/<model>_small.pt: {"state_dict", "options", "model", "input_size", "train"}; load with
  `--weights FILE --set KEY=VALUE` for each option (the options are printed and stored in the file);
- benchmarks/data/calib/: 16 generated images and 8 crops of photographs that the parity checks do not use
  (immunohistochemistry, hubble_deep_field, retina, camera), named to sort last so that a budget's held-out
  share is real photographs; benchmarks/data/heldout/: 12 generated images for evaluation, with their ground
  truth (labels, saliency) in heldout/targets.npz;
- benchmarks/checkpoints/train_small.json: losses and held-out metrics.

The data: backgrounds are crops of scikit-image's photographs and textures (hubble_deep_field, retina, camera,
moon, page, text, coins, brick, grass, gravel, clock; grey ones tinted); on each, one to three objects are
pasted, each a crop of one of five photographs (chelsea, coffee, rocket, astronaut, immunohistochemistry:
the segmentation classes 1-5, 0 is background) cut to a random ellipse, rectangle or polygon. The saliency
target is the union of the object masks, blurred and scaled to [0, 1] (salient = pasted objects).

Run: python benchmarks/train_small.py [--steps N] [--only deeplabv3plus_mobilenetv2|msinet]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from deploykit.io.images import preprocess  # noqa: E402
from deploykit.zoo import get_model_spec  # noqa: E402

OBJECTS = ("chelsea", "coffee", "rocket", "astronaut", "immunohistochemistry")  # classes 1..5
BACKGROUNDS = ("hubble_deep_field", "retina", "camera", "moon", "page", "text", "coins", "brick", "grass",
               "gravel", "clock")
NUM_CLASSES = 21  # the zoo default, so the checkpoint fits without --set num_classes; 6..20 never occur
CHECKPOINTS = ROOT / "checkpoints"
DATA = ROOT / "data"


@dataclass(frozen=True)
class Recipe:
    model: str
    options: dict[str, object]
    input_size: tuple[int, int]  # (height, width) of training images
    steps: int
    batch: int = 8
    lr: float = 2e-3
    pool: int = 1600  # the first `pool` images of the shared pool (one seeded stream, so a prefix is reproducible)


SIZE = (96, 128)  # training images (height, width); MSI-Net needs multiples of 8
RECIPES = {
    # 8x the steps on 4x the images of the first checkpoint (1500 on 1600): wider class margins, which decide
    # its INT8 pixel agreement (issue 20; benchmarks/results/int8_input_sensitivity.md)
    "deeplabv3plus_mobilenetv2": Recipe("deeplabv3plus_mobilenetv2", {"width_multiplier": 0.35}, SIZE, steps=12000,
                                        pool=6400),
    "msinet": Recipe("msinet", {"width": 0.125}, SIZE, steps=1500),
}


def _photos(names: tuple[str, ...]) -> list[np.ndarray]:
    from skimage import data

    images = []
    for name in names:
        image = np.asarray(getattr(data, name)())
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        images.append(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    return images


class Generator:
    """Deterministic procedural images: `sample(rng, size)` -> (RGB uint8, labels int64, saliency float32)."""

    def __init__(self) -> None:
        self.objects = _photos(OBJECTS)
        self.backgrounds = _photos(BACKGROUNDS)

    @staticmethod
    def _crop(rng: np.random.Generator, photo: np.ndarray, size: tuple[int, int]) -> Image.Image:
        h, w = photo.shape[:2]
        scale = rng.uniform(0.3, 1.0)
        ch, cw = max(8, int(h * scale)), max(8, int(w * scale))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = Image.fromarray(photo[top : top + ch, left : left + cw]).resize((size[1], size[0]),
                                                                            Image.Resampling.BILINEAR)
        return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop

    @staticmethod
    def _shape(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
        h, w = size
        mask = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(mask)
        oh, ow = rng.uniform(0.25, 0.6) * h, rng.uniform(0.25, 0.6) * w
        cy, cx = rng.uniform(oh / 2, h - oh / 2), rng.uniform(ow / 2, w - ow / 2)
        box = (cx - ow / 2, cy - oh / 2, cx + ow / 2, cy + oh / 2)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse(box, fill=255)
        elif kind == 1:
            draw.rectangle(box, fill=255)
        else:
            corners = int(rng.integers(3, 7))
            angles = np.sort(rng.uniform(0, 2 * math.pi, corners))
            radius = rng.uniform(0.6, 1.0, corners)
            draw.polygon([(cx + r * ow / 2 * math.cos(a), cy + r * oh / 2 * math.sin(a))
                          for a, r in zip(angles, radius, strict=True)], fill=255)
        return mask

    def sample(self, rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        background = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        canvas = np.asarray(self._crop(rng, background, size), dtype=np.float32)
        canvas = canvas * rng.uniform(0.5, 1.2, size=3)  # tint (grey textures become coloured)
        image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
        labels = np.zeros(size, dtype=np.int64)
        salient = np.zeros(size, dtype=np.float32)
        for _ in range(int(rng.integers(1, 4))):
            cls = int(rng.integers(len(self.objects)))
            mask = self._shape(rng, size)
            image.paste(self._crop(rng, self.objects[cls], size), (0, 0), mask)
            inside = np.asarray(mask) > 127
            labels[inside] = cls + 1
            salient[inside] = 1.0
        blurred = Image.fromarray((salient * 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(radius=0.06 * min(size)))
        saliency = np.asarray(blurred, dtype=np.float32)
        saliency = saliency / max(float(saliency.max()), 1e-6)
        return np.asarray(image), labels, saliency


@dataclass
class Pool:
    images: np.ndarray  # N,H,W,3 uint8
    labels: np.ndarray  # N,H,W uint8
    saliency: np.ndarray  # N,H,W float16


def make_pool(count: int, seed: int, size: tuple[int, int]) -> Pool:
    generator = Generator()
    rng = np.random.default_rng(seed)
    samples = [generator.sample(rng, size) for _ in range(count)]
    return Pool(np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples]).astype(np.uint8),
                np.stack([s[2] for s in samples]).astype(np.float16))


def batches(recipe: Recipe, pool: Pool, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Random batches from the pool, each image flipped left-right with probability 1/2."""
    rng = np.random.default_rng(seed)
    pre = get_model_spec(recipe.model).preprocessing
    while True:
        index = rng.integers(0, len(pool.images), recipe.batch)
        flip = rng.random(recipe.batch) < 0.5
        images = [pool.images[i][:, ::-1] if f else pool.images[i] for i, f in zip(index, flip, strict=True)]
        labels = [pool.labels[i][:, ::-1] if f else pool.labels[i] for i, f in zip(index, flip, strict=True)]
        maps = [pool.saliency[i][:, ::-1] if f else pool.saliency[i] for i, f in zip(index, flip, strict=True)]
        x = np.concatenate([preprocess(np.ascontiguousarray(im), pre, recipe.input_size) for im in images])
        yield (torch.from_numpy(x), torch.from_numpy(np.stack(labels).astype(np.int64)),
               torch.from_numpy(np.stack(maps).astype(np.float32))[:, None])


def saliency_kld(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """KL divergence of the predicted from the target map, both made distributions (MSI-Net's training loss)."""
    p = target.flatten(1) / (target.flatten(1).sum(1, keepdim=True) + eps)
    q = prediction.flatten(1) / (prediction.flatten(1).sum(1, keepdim=True) + eps)
    return (p * torch.log(eps + p / (q + eps))).sum(1).mean()


def loss_of(task: str, output: torch.Tensor, labels: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
    if task == "segmentation":
        return F.cross_entropy(output, labels)
    return saliency_kld(output, saliency)


def train(recipe: Recipe, pool: Pool, seed: int, log_every: int = 100) -> tuple[torch.nn.Module, list[float]]:
    torch.manual_seed(seed)
    spec = get_model_spec(recipe.model)
    model = spec.build(**recipe.options)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.steps,
                                                   pct_start=0.1)
    losses: list[float] = []
    started = time.perf_counter()
    stream = batches(recipe, pool, seed)
    for step in range(1, recipe.steps + 1):
        x, labels, saliency = next(stream)
        loss = loss_of(spec.task, model(x), labels, saliency)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if step % log_every == 0 or step == recipe.steps:
            recent = float(np.mean(losses[-log_every:]))
            print(f"  {recipe.model} step {step}/{recipe.steps} loss {recent:.4f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    return model.eval(), losses


def write_images(folder: Path, count: int, seed: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Generated images as PNG in `folder`; returns their labels and saliency maps."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = Generator()
    rng = np.random.default_rng(seed)
    labels, maps = [], []
    for index in range(count):
        image, label, saliency = generator.sample(rng, size)
        Image.fromarray(image).save(folder / f"{index:03d}.png")
        labels.append(label)
        maps.append(saliency)
    return np.stack(labels), np.stack(maps)


def write_photo_crops(folder: Path, count: int, seed: int, size: tuple[int, int]) -> None:
    """Crops of photographs the parity checks do not use (their four are astronaut, coffee, chelsea, rocket)."""
    photos = _photos(("immunohistochemistry", "hubble_deep_field", "retina", "camera"))
    rng = np.random.default_rng(seed)
    for index in range(count):
        crop = Generator._crop(rng, photos[index % len(photos)], size)
        crop.save(folder / f"photo_{index:02d}.png")


def evaluate(recipe: Recipe, model: torch.nn.Module, folder: Path, labels: np.ndarray, maps: np.ndarray
             ) -> dict[str, float]:
    """Held-out metrics against the generated ground truth (mIoU over classes present; saliency CC, KLD)."""
    from deploykit.io.images import list_images, read_image
    from deploykit.metrics.tasks import cc, kld

    spec = get_model_spec(recipe.model)
    size = labels.shape[1:]
    with torch.inference_mode():
        outputs = [model(torch.from_numpy(preprocess(read_image(p), spec.preprocessing, size))).numpy()
                   for p in list_images(folder)]
    if spec.task == "segmentation":
        predicted = np.concatenate([o.argmax(1) for o in outputs])
        ious = []
        for cls in range(len(OBJECTS) + 1):  # mIoU over background and the five object classes
            union = np.logical_or(predicted == cls, labels == cls).sum()
            if union:
                ious.append(np.logical_and(predicted == cls, labels == cls).sum() / union)
        return {"pixel_accuracy": float((predicted == labels).mean()), "miou": float(np.mean(ious))}
    predicted_maps = [o[0, 0].astype(np.float64) for o in outputs]
    return {"cc": float(np.mean([cc(t.astype(np.float64), p) for t, p in zip(maps, predicted_maps, strict=True)])),
            "kld": float(np.mean([kld(t.astype(np.float64), p) for t, p in zip(maps, predicted_maps, strict=True)]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="Override the number of steps (for a smoke run).")
    parser.add_argument("--only", choices=sorted(RECIPES), default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    write_images(DATA / "calib", 16, seed=1000 + args.seed, size=SIZE)
    write_photo_crops(DATA / "calib", 8, seed=3000 + args.seed, size=SIZE)
    labels, maps = write_images(DATA / "heldout", 12, seed=2000 + args.seed, size=SIZE)
    np.savez_compressed(DATA / "heldout" / "targets.npz", labels=labels, saliency=maps)
    chosen = {name: recipe for name, recipe in RECIPES.items() if not args.only or name == args.only}
    started = time.perf_counter()
    pool = make_pool(max(r.pool for r in chosen.values()) if not args.steps else 64, seed=args.seed, size=SIZE)
    print(f"generated {len(pool.images)} training images in {time.perf_counter() - started:.0f} s", flush=True)
    summary_path = CHECKPOINTS / "train_small.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    for name, recipe in chosen.items():
        if args.steps:
            recipe = Recipe(recipe.model, recipe.options, recipe.input_size, args.steps, recipe.batch, recipe.lr,
                            pool=len(pool.images))
        print(f"training {name} {recipe.options} on {recipe.input_size[0]}x{recipe.input_size[1]}, "
              f"{recipe.steps} steps of {recipe.batch} from {recipe.pool} images", flush=True)
        started = time.perf_counter()
        prefix = Pool(pool.images[:recipe.pool], pool.labels[:recipe.pool], pool.saliency[:recipe.pool])
        model, losses = train(recipe, prefix, args.seed)
        seconds = time.perf_counter() - started
        metrics = evaluate(recipe, model, DATA / "heldout", labels, maps)
        record = {"recipe": asdict(recipe), "seed": args.seed, "seconds": round(seconds, 1),
                  "loss_first_50": float(np.mean(losses[:50])), "loss_last_50": float(np.mean(losses[-50:])),
                  "heldout": metrics, "torch": str(torch.__version__)}
        path = CHECKPOINTS / f"{name}_small.pt"
        torch.save({"state_dict": model.state_dict(), "options": recipe.options, "model": name,
                    "input_size": list(recipe.input_size), "train": record}, path)
        summary[name] = record
        sets = " ".join(f"--set {k}={v}" for k, v in recipe.options.items())
        print(f"{name}: {seconds:.0f} s, loss {record['loss_first_50']:.4f} -> {record['loss_last_50']:.4f}, "
              f"held-out {json.dumps(metrics)}\n  wrote {path} ({path.stat().st_size / 1e6:.1f} MB); "
              f"use: deploykit export {name} --weights {path} {sets}", flush=True)
    summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
