"""Stack PNG grids vertically (white gap), scale up with nearest neighbour: python stack.py OUT SCALE IN..."""
import sys

from PIL import Image

out, scale, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
ims = [Image.open(p).convert("L") for p in paths]
W = max(i.width for i in ims)
H = sum(i.height for i in ims) + 4 * (len(ims) - 1)
canvas = Image.new("L", (W, H), 255)
y = 0
for im in ims:
    canvas.paste(im, (0, y))
    y += im.height + 4
canvas.resize((W * scale, H * scale), Image.NEAREST).save(out)
print(out, canvas.size)
