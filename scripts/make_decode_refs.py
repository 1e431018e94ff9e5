#!/usr/bin/env python3
"""Makes the decoder test images of gemma-vision/tests/data/decode/ and Pillow's pixels.

For every case it writes the image file and, in `manifest.txt`, one line
`file width height fnv1a64` where the hash is that of Pillow's
`Image.open(file).convert("RGB")` bytes (RGB8, row-major HWC). Images of at most
RAW_MAX_PIXELS pixels also get NAME.rgb, those bytes themselves, so that the Rust test
`gemma-vision/tests/decode_pillow.rs` can report how many pixels differ.

Run with Pillow 13 built with libjpeg-turbo (the reference of transformers):
    /tmp/pilvenv/bin/python scripts/make_decode_refs.py
Images are deterministic (fixed seed); keep them small (the whole folder < ~300 KB).
"""

import io
import os
import struct
import zlib

import numpy as np
from PIL import Image, features

OUT = os.path.join(os.path.dirname(__file__), "..", "gemma-vision", "tests", "data", "decode")


def photo(w, h, seed, channels=3):
    """Smooth gradients, noise and sharp edges, so rounding differences show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = []
    for c in range(channels):
        g = 128 + 90 * np.sin(x / (5.0 + 3 * c) + y / (7.0 + c)) * np.cos(y / 11.0 - c)
        g += 40 * (x / w - y / h) * (1 if c % 2 else -1)
        g += rng.normal(0, 9, size=(h, w))
        # A hard-edged square and disc of saturated color.
        g[(x > w * 0.55) & (x < w * 0.8) & (y > h * 0.2) & (y < h * 0.5)] = (40, 230, 120, 200)[c]
        g[(x - w * 0.3) ** 2 + (y - h * 0.7) ** 2 < (min(w, h) * 0.18) ** 2] = (250, 10, 60, 90)[c]
        planes.append(g)
    return np.clip(np.stack(planes, axis=-1), 0, 255).round().astype(np.uint8)


RAW_MAX_PIXELS = 4096


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def save_ref(name, path):
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        data = rgb.tobytes()
        if rgb.width * rgb.height <= RAW_MAX_PIXELS:
            with open(os.path.join(OUT, name + ".rgb"), "wb") as f:
                f.write(data)
        return rgb.size + (fnv1a64(data),)


def png_chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png(path, pixels, color_type, bit_depth, interlace=False, extra=b""):
    """A PNG from an (h, w, c) array of uint8 or uint16 samples (bit depth >= 8)."""
    h, w = pixels.shape[:2]
    samples = pixels.astype(">u2") if bit_depth == 16 else pixels.astype(np.uint8)

    def rows_of(img):
        return b"".join(b"\x00" + img[r].tobytes() for r in range(img.shape[0]))

    if interlace:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            sub = samples[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += rows_of(sub)
    else:
        raw = rows_of(samples)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra
    data += png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def patch_sof_422_to_440(data):
    """Turns a baseline 4:2:2 JPEG into a valid 4:4:0 one: an MCU of two luma blocks
    side by side has the same entropy-coded layout as one of two blocks stacked, so
    only the SOF0 sampling factors and the size change (the picture is rearranged)."""
    i = data.index(b"\xff\xc0")
    h, w = struct.unpack(">HH", data[i + 5 : i + 9])
    mcus_x, mcus_y = (w + 15) // 16, (h + 7) // 8
    new_w, new_h = mcus_x * 8 - 3, mcus_y * 16 - 5
    out = bytearray(data)
    out[i + 5 : i + 9] = struct.pack(">HH", new_h, new_w)
    assert out[i + 11] == 0x21, "luma sampling of a 4:2:2 file"
    out[i + 11] = 0x12
    return bytes(out)


def patch_sof_420_to_411(data):
    """Turns a baseline 4:2:0 JPEG into a valid 4:1:1 one (four luma blocks per MCU
    either way; only the SOF0 sampling factors and the size change)."""
    i = data.index(b"\xff\xc0")
    h, w = struct.unpack(">HH", data[i + 5 : i + 9])
    mcus_x, mcus_y = (w + 15) // 16, (h + 15) // 16
    count = mcus_x * mcus_y
    # Same MCU count laid out 4x wider per MCU: mcus_y * 2 rows of mcus_x / 2 MCUs.
    assert mcus_x % 2 == 0
    new_w, new_h = (mcus_x // 2) * 32 - 5, (mcus_y * 2) * 8 - 3
    assert ((new_w + 31) // 32) * ((new_h + 7) // 8) == count
    out = bytearray(data)
    out[i + 5 : i + 9] = struct.pack(">HH", new_h, new_w)
    assert out[i + 11] == 0x22, "luma sampling of a 4:2:0 file"
    out[i + 11] = 0x41
    return bytes(out)


def cut_after_scans(data, scans):
    """The progressive file `data` ending (with EOI) after its first `scans` scans,
    before the tables of the next one: libjpeg then smooths the missing coefficients."""
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    cut = starts[scans]
    tables = data.rfind(b"\xff\xc4", starts[scans - 1], cut)
    return data[: tables if tables > 0 else cut] + b"\xff\xd9"


def strip_segment(data, marker):
    """Removes every APPn segment `FF marker` from the header of a JPEG file."""
    out, i = bytearray(data[:2]), 2
    while data[i + 1] != 0xDA:
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if data[i + 1] != marker:
            out += data[i : i + 2 + length]
        i += 2 + length
    return bytes(out + data[i:])


def main():
    os.makedirs(OUT, exist_ok=True)
    assert features.check_feature("libjpeg_turbo"), "Pillow must use libjpeg-turbo"
    manifest = []

    def jpeg(name, w, h, seed, mode="RGB", **opts):
        pixels = photo(w, h, seed, 1 if mode == "L" else 3)
        img = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
        path = os.path.join(OUT, name + ".jpg")
        img.save(path, "JPEG", **opts)
        manifest.append((name + ".jpg",) + save_ref(name, path))

    jpeg("j444_q90_37x29", 37, 29, 1, quality=90, subsampling=0)
    jpeg("j422_q85_37x29", 37, 29, 2, quality=85, subsampling=1)
    jpeg("j420_q75_64x48", 64, 48, 3, quality=75, subsampling=2)
    jpeg("j420_q95_33x65", 33, 65, 4, quality=95, subsampling=2)
    jpeg("j420_q100_17x17", 17, 17, 5, quality=100, subsampling=2)
    jpeg("j420_q30_45x31", 45, 31, 6, quality=30, subsampling=2)
    jpeg("j422_q60_31x45", 31, 45, 7, quality=60, subsampling=1)
    jpeg("j420_q5_48x40", 48, 40, 27, quality=5, subsampling=2)
    jpeg("jgray_q90_33x65", 33, 65, 8, mode="L", quality=90)
    jpeg("jgray_prog_q80_29x37", 29, 37, 9, mode="L", quality=80, progressive=True)
    jpeg("j420_prog_q85_41x35", 41, 35, 10, quality=85, subsampling=2, progressive=True)
    jpeg("j444_prog_q70_35x41", 35, 41, 11, quality=70, subsampling=0, progressive=True)
    jpeg("j422_prog_q95_37x29", 37, 29, 12, quality=95, subsampling=1, progressive=True)
    jpeg("j420_opt_q80_37x29", 37, 29, 13, quality=80, subsampling=2, optimize=True)
    jpeg("j420_rst3_q85_47x33", 47, 33, 14, quality=85, subsampling=2, restart_marker_blocks=3)
    jpeg("j444_rstrow_q85_29x23", 29, 23, 15, quality=85, subsampling=0, restart_marker_rows=1)
    jpeg(
        "j420_prog_rst2_q90_39x27",
        39,
        27,
        16,
        quality=90,
        subsampling=2,
        progressive=True,
        restart_marker_blocks=2,
    )
    jpeg("j420_q90_16x16", 16, 16, 17, quality=90, subsampling=2)
    jpeg("j420_q90_1x1", 1, 1, 18, quality=90, subsampling=2)
    jpeg("j422_q90_3x2", 3, 2, 19, quality=90, subsampling=1)

    # 4:4:0 (Pillow cannot write it): a patched 4:2:2 file.
    img = Image.fromarray(photo(40, 24, 20))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=88, subsampling=1)
    path = os.path.join(OUT, "j440_q88.jpg")
    with open(path, "wb") as f:
        f.write(patch_sof_422_to_440(buf.getvalue()))
    manifest.append(("j440_q88.jpg",) + save_ref("j440_q88", path))

    # CMYK (Adobe, inverted), as Pillow writes it.
    img = Image.fromarray(photo(23, 19, 21, 4), "CMYK")
    path = os.path.join(OUT, "jcmyk_q90_23x19.jpg")
    img.save(path, "JPEG", quality=90)
    manifest.append(("jcmyk_q90_23x19.jpg",) + save_ref("jcmyk_q90_23x19", path))

    # YCCK (Adobe transform 2): the CMYK file with its transform flag patched.
    data = open(path, "rb").read()
    i = data.index(b"Adobe")
    assert data[i + 11] == 0
    path = os.path.join(OUT, "jycck_q90_23x19.jpg")
    with open(path, "wb") as f:
        f.write(data[: i + 11] + b"\x02" + data[i + 12 :])
    manifest.append(("jycck_q90_23x19.jpg",) + save_ref("jycck_q90_23x19", path))

    # RGB-coded JPEG (Adobe transform 0, component ids 'R', 'G', 'B').
    jpeg("jrgb_adobe_q90_29x23", 29, 23, 22, quality=90, keep_rgb=True)
    # The same without its Adobe marker: libjpeg goes by the ids 'R', 'G', 'B'.
    data = open(os.path.join(OUT, "jrgb_adobe_q90_29x23.jpg"), "rb").read()
    path = os.path.join(OUT, "jrgb_ids_q90_29x23.jpg")
    with open(path, "wb") as f:
        f.write(strip_segment(data, 0xEE))
    manifest.append(("jrgb_ids_q90_29x23.jpg",) + save_ref("jrgb_ids_q90_29x23", path))
    # YCbCr without JFIF marker (ids 1, 2, 3).
    data = open(os.path.join(OUT, "j420_q75_64x48.jpg"), "rb").read()
    path = os.path.join(OUT, "j420_nojfif_q75_64x48.jpg")
    with open(path, "wb") as f:
        f.write(strip_segment(data, 0xE0))
    manifest.append(("j420_nojfif_q75_64x48.jpg",) + save_ref("j420_nojfif_q75_64x48", path))

    # 4:1:1 (luma 4x1, generic replication upsampling): a patched 4:2:0 file.
    img = Image.fromarray(photo(64, 30, 23))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=88, subsampling=2)
    path = os.path.join(OUT, "j411_q88.jpg")
    with open(path, "wb") as f:
        f.write(patch_sof_420_to_411(buf.getvalue()))
    manifest.append(("j411_q88.jpg",) + save_ref("j411_q88", path))

    # Larger images (hash only): many MCU rows, a restart marker every MCU.
    jpeg("j420_q85_301x203", 301, 203, 24, quality=85, subsampling=2, restart_marker_blocks=1)
    jpeg("j422_prog_q90_257x191", 257, 191, 25, quality=90, subsampling=1, progressive=True)
    jpeg("j444_prog_opt_q75_203x157", 203, 157, 26, quality=75, subsampling=0, progressive=True, optimize=True)

    # Progressive files that end early (with EOI): inter-block smoothing. 4:2:0 with
    # 3 luma block rows (libjpeg's odd row count in the last iMCU row), gray, 4:4:4.
    for base, w, h, seed, opts, cuts in [
        ("j420", 37, 20, 28, dict(subsampling=2), (1, 2, 3, 5, 7)),
        ("jgray", 27, 21, 29, dict(), (1, 2, 4)),
        ("j444", 21, 27, 30, dict(subsampling=0), (1, 4, 6)),
    ]:
        mode = "L" if base == "jgray" else "RGB"
        pixels = photo(w, h, seed, 1 if mode == "L" else 3)
        img = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85, progressive=True, **opts)
        for scans in cuts:
            name = f"{base}_prog_first{scans}_{w}x{h}"
            path = os.path.join(OUT, name + ".jpg")
            with open(path, "wb") as f:
                f.write(cut_after_scans(buf.getvalue(), scans))
            manifest.append((name + ".jpg",) + save_ref(name, path))

    def png(name, img, **opts):
        path = os.path.join(OUT, name + ".png")
        img.save(path, "PNG", **opts)
        manifest.append((name + ".png",) + save_ref(name, path))

    rgb = photo(37, 29, 30)
    png("p_rgb8_37x29", Image.fromarray(rgb))
    rgba = np.concatenate([photo(29, 23, 31), photo(29, 23, 32, 1)], axis=-1)
    png("p_rgba8_29x23", Image.fromarray(rgba, "RGBA"))
    png("p_gray8_33x17", Image.fromarray(photo(33, 17, 33, 1)[..., 0], "L"))
    la = np.concatenate([photo(21, 19, 34, 1), photo(21, 19, 35, 1)], axis=-1)
    png("p_la8_21x19", Image.fromarray(la, "LA"))
    pal = Image.fromarray(photo(31, 27, 36)).quantize(colors=37)
    png("p_palette_31x27", pal)
    pal_t = pal.copy()
    pal_t.info["transparency"] = 3
    png("p_palette_trns_31x27", pal_t, transparency=3)
    png("p_1bit_35x21", Image.fromarray(photo(35, 21, 37, 1)[..., 0], "L").convert("1"))

    def raw_png(name, pixels, color_type, bit_depth, **opts):
        path = os.path.join(OUT, name + ".png")
        write_png(path, pixels, color_type, bit_depth, **opts)
        manifest.append((name + ".png",) + save_ref(name, path))

    rng = np.random.default_rng(40)

    def wide(w, h, seed, c):
        # 16-bit samples whose low byte is noise, and values near 0 and 65535.
        hi = photo(w, h, seed, c).astype(np.uint16)
        return (hi << 8) | rng.integers(0, 256, size=hi.shape, dtype=np.uint16)

    raw_png("p_gray16_23x19", wide(23, 19, 41, 1), 0, 16)
    raw_png("p_rgb16_23x19", wide(23, 19, 42, 3), 2, 16)
    raw_png("p_rgba16_19x17", wide(19, 17, 43, 4), 6, 16)
    raw_png("p_la16_17x13", wide(17, 13, 44, 2), 4, 16)
    raw_png("p_rgb8_adam7_27x21", photo(27, 21, 45), 2, 8, interlace=True)
    raw_png("p_gray16_adam7_13x11", wide(13, 11, 46, 1), 0, 16, interlace=True)
    # 8-bit RGB with a tRNS color key (dropped by convert("RGB")).
    trns = png_chunk(b"tRNS", struct.pack(">HHH", 40, 230, 120))
    raw_png("p_rgb8_trns_25x15", photo(25, 15, 47), 2, 8, extra=trns)

    with open(os.path.join(OUT, "manifest.txt"), "w") as f:
        for name, w, h, digest in manifest:
            f.write(f"{name} {w} {h} {digest}\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"{len(manifest)} cases, {total} bytes in {OUT}")


if __name__ == "__main__":
    main()
