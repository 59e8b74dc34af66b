"""Render a grid of generated Pathfinder samples with their labels, for checking by eye.

    python scripts/pathfinder_grid.py --resolution 32 --difficulty hard --n 16 --out grid.png

Each tile is one image scaled up (nearest neighbour) inside a border: green =
label 1 (markers on one path), red = label 0 (markers on two paths); the label
is also written under the tile. With --paths the targets are tinted (path 0
blue, path 1 orange) on a second copy of each tile, which shows which path each
marker ends.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
from PIL import Image, ImageDraw

from lra.tasks import pathfinder_gen


def tile_rgb(img: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
    rgb = np.repeat(img[..., None], 3, -1).astype(np.float32)
    if ids is not None:
        tint = np.ones_like(rgb)
        tint[ids == 1] = (0.35, 0.6, 1.0)
        tint[ids == 2] = (1.0, 0.6, 0.2)
        dim = (ids >= 3)[..., None]
        rgb = np.where(dim, rgb * 0.45, rgb * tint)
        rgb = np.maximum(rgb, np.where((ids > 0)[..., None], 25.0, 0.0))
    return rgb.clip(0, 255).astype(np.uint8)


def render_grid(images, labels, path_ids=None, scale: int | None = None, cols: int | None = None):
    n, h, _ = images.shape
    scale = scale or max(1, 192 // h)
    per = 2 if path_ids is not None else 1
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    border, text_h, gap = 4, 14, 6
    tw = per * h * scale + (per - 1) * gap + 2 * border
    th = h * scale + 2 * border + text_h
    canvas = Image.new("RGB", (cols * (tw + gap) + gap, rows * (th + gap) + gap), (40, 40, 40))
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        r, c = divmod(i, cols)
        x0, y0 = gap + c * (tw + gap), gap + r * (th + gap)
        color = (40, 200, 60) if labels[i] == 1 else (220, 50, 50)
        draw.rectangle([x0, y0, x0 + tw - 1, y0 + h * scale + 2 * border - 1], fill=color)
        tiles = [tile_rgb(images[i], None)]
        if path_ids is not None:
            tiles.append(tile_rgb(images[i], path_ids[i]))
        for j, t in enumerate(tiles):
            im = Image.fromarray(t).resize((h * scale, h * scale), Image.NEAREST)
            canvas.paste(im, (x0 + border + j * (h * scale + gap), y0 + border))
        draw.text((x0 + 2, y0 + h * scale + 2 * border + 1),
                  f"#{i} label {int(labels[i])} ({'one path' if labels[i] else 'two paths'})",
                  fill=(230, 230, 230))
    return canvas


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--difficulty", default="hard")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=int, default=None, help="pixels per image pixel")
    ap.add_argument("--paths", action="store_true", help="add a copy with target paths tinted")
    ap.add_argument("--out", default="grid.png")
    args = ap.parse_args(argv)
    images, labels, meta = pathfinder_gen.generate(
        args.n, args.resolution, args.difficulty, seed=args.seed, workers=1, return_meta=True
    )
    grid = render_grid(images, labels, meta["path_ids"] if args.paths else None, args.scale)
    grid.save(args.out)
    print(f"wrote {args.out}: {args.n} samples, {int(labels.sum())} positive")
    return 0


if __name__ == "__main__":
    sys.exit(main())
