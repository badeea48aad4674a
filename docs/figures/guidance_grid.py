"""The guidance figure of the README (docs/guidance.png) from genlab's own outputs.

    python docs/figures/guidance_grid.py DIR OUT.png

DIR holds cfg-W.npz (genlab sample RUN --class all --guidance W --npz ...) for W in 0 1 2 4,
cg-S.npz (the same with --classifier) for S in 0 1 2 4, and next to each NAME.npz the
NAME.json that ``genlab eval RUN --samples NAME.npz --metrics fid,kid,pr --json`` printed.
Each row shows the first three samples of every class (columns 0..9) and the class accuracy.
"""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

d_in, out = Path(sys.argv[1]), sys.argv[2]
rows = [(f"cfg-{w}", f"CFG w={w}") for w in (0, 1, 2, 4)] + [(f"cg-{s}", f"classifier s={s}") for s in (0, 1, 2, 4)]
per, label_w, cell = 3, 120, 28
img = Image.new("L", (label_w + 10 * per * cell + 9 * 4, len(rows) * (cell + 6) + 20), 255)
draw = ImageDraw.Draw(img)
for c in range(10):
    draw.text((label_w + c * (per * cell + 4) + per * cell // 2 - 3, 3), str(c), fill=0)
for i, (name, title) in enumerate(rows):
    z = np.load(d_in / f"{name}.npz")
    x, y = z["samples"][:, 0], z["labels"]
    acc = json.loads((d_in / f"{name}.json").read_text())["class_accuracy"]
    top = 20 + i * (cell + 6)
    draw.text((4, top + 4), title, fill=0)
    draw.text((4, top + 15), f"accuracy {acc:.2f}", fill=90)
    for c in range(10):
        for k, j in enumerate(np.flatnonzero(y == c)[:per]):
            img.paste(Image.fromarray(x[j]), (label_w + c * (per * cell + 4) + k * cell, top))
img.resize((img.width * 2, img.height * 2), Image.NEAREST).save(out)
