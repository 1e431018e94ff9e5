"""Held-out references for gemma-vision's preprocessing, made with Pillow 13.0.0.

Run: python make_pillow_refs.py  (needs Pillow and numpy; writes beside this file).
Writes small encoded images (JPEG and PNG variants) and pillow_refs.json with, per case,
the FNV-1a 64-bit hash of the 224x224 RGB8 result of
  * squash:    Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR)
               (what transformers' Gemma3ImageProcessor feeds on), and
  * letterbox: llama.cpp mtmd's pad-to-square (float32 scale, ceil, centered paste on
               black), resized with Pillow's filter one axis at a time, horizontal first,
               as llama.cpp's port of it does (Pillow itself may run the vertical pass
               first: see ImagingResampleInner).
Synthetic sources ("gen:WxH") use pattern() below, which the Rust test reproduces.
JPEG decoding is not bit-exact with libjpeg-turbo (the image crate decodes with
zune-jpeg), so for JPEG files the test compares "thumb", 8x8 block means of the
decoded image, within a tolerance instead of the hashes.
"""
import io, json, math, os
import numpy as np
from PIL import Image

S = 224
HERE = os.path.dirname(os.path.abspath(__file__))


def pattern(w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    out = np.zeros((h, w, 3), np.uint8)
    for c in range(3):
        out[..., c] = (x * 7 + y * 13 + c * 29 + ((x * y) % 17) * 11 + ((x ^ y) & 31)) % 256
    return out


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def letterbox(img):
    w, h = img.size
    scale = min(np.float32(S) / np.float32(w), np.float32(S) / np.float32(h))
    nw = min(int(math.ceil(np.float32(w) * scale)), S)
    nh = min(int(math.ceil(np.float32(h) * scale)), S)
    resized = img.resize((nw, h), Image.BILINEAR).resize((nw, nh), Image.BILINEAR)
    canvas = Image.new("RGB", (S, S), (0, 0, 0))
    canvas.paste(resized, ((S - nw) // 2, (S - nh) // 2))
    return canvas


def thumb(rgb):
    """Mean of each of 8x8 blocks of the image (rows, cols, channels), rounded to 1/100."""
    a = np.asarray(rgb).astype(np.float64)
    h, w = a.shape[0] // 8 * 8, a.shape[1] // 8 * 8
    t = a[:h, :w].reshape(8, h // 8, 8, w // 8, 3).mean(axis=(1, 3))
    return [round(float(v), 2) for v in t.reshape(-1)]


def entry(source, img):
    rgb = img.convert("RGB")
    extra = {"thumb": thumb(rgb)} if source.startswith("file:") else {}
    return extra | {
        "source": source,
        "decoded": fnv1a64(rgb.tobytes()),
        "squash": fnv1a64(rgb.resize((S, S), Image.BILINEAR).tobytes()),
        "letterbox": fnv1a64(letterbox(rgb).tobytes()),
    }


def main():
    cases = []
    for w, h in [(100, 50), (333, 97), (97, 333), (1, 1), (2000, 7), (224, 100), (500, 224), (447, 447), (225, 223)]:
        cases.append(entry(f"gen:{w}x{h}", Image.fromarray(pattern(w, h), "RGB")))
    # A smooth photo-like image for the encoded variants.
    y, x = np.mgrid[0:200, 0:300].astype(np.float64)
    photo = np.stack([
        127 + 120 * np.sin(x / 23.0) * np.cos(y / 31.0),
        127 + 100 * np.cos((x + y) / 40.0),
        (x * 0.8 + y * 0.3) % 256,
    ], axis=-1).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(photo, "RGB")
    variants = {
        "photo_q90_420.jpg": lambda f: img.save(f, "JPEG", quality=90),
        "photo_q75_444_progressive.jpg": lambda f: img.save(f, "JPEG", quality=75, subsampling=0, progressive=True),
        "photo_gray.png": lambda f: img.convert("L").save(f, "PNG"),
        "photo_rgba.png": lambda f: Image.fromarray(
            np.dstack([photo, (np.arange(300)[None, :] * np.ones((200, 1))).astype(np.uint8)]), "RGBA").save(f, "PNG"),
        "photo_palette.png": lambda f: img.convert("P", palette=Image.ADAPTIVE, colors=64).save(f, "PNG"),
    }
    for name, save in variants.items():
        path = os.path.join(HERE, name)
        save(path)
        cases.append(entry(f"file:{name}", Image.open(path)))
    with open(os.path.join(HERE, "pillow_refs.json"), "w") as f:
        json.dump({"image_size": S, "pillow": Image.__version__, "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
