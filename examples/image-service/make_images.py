#!/usr/bin/env python3
"""Writes the example's images: 12 small PNGs (patterns of different sizes,
a few KB in all), made with the standard library only. They are committed;
run this again to remake them (the output is the same every time)."""

import math
import os
import struct
import zlib

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "images")


def png(width, height, pixel):
    """A truecolour PNG whose pixel (x, y) is pixel(x, y) -> (r, g, b)."""
    raw = b"".join(
        b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def clamp(v):
    return max(0, min(255, int(v)))


PATTERNS = [
    # (width, height, pixel)
    (32, 24, lambda x, y: (255, 120 + 4 * y, 40)),                      # sunset
    (40, 40, lambda x, y: (20, 60, 200) if (x // 8 + y // 8) % 2 else (240, 240, 240)),
    (24, 24, lambda x, y: (clamp(10 * x), clamp(10 * y), 128)),          # gradient
    (48, 32, lambda x, y: (30, 160, 60) if y > 20 else (120, 190, 255)),  # field and sky
    (36, 36, lambda x, y: (250, 220, 0) if (x - 18) ** 2 + (y - 18) ** 2 < 150 else (10, 10, 60)),
    (64, 16, lambda x, y: (clamp(128 + 127 * math.sin(x / 3)), 90, 160)),  # waves
    (28, 40, lambda x, y: (200, 30, 30) if x % 7 < 3 else (255, 255, 255)),  # stripes
    (32, 32, lambda x, y: (clamp(8 * abs(x - 16) + 8 * abs(y - 16)),) * 3),  # diamond
    (56, 28, lambda x, y: (70, 40, 20) if y > 22 or abs(x - 28) < 3 else (160, 220, 250)),
    (20, 20, lambda x, y: (255, 105, 180)),                               # plain pink
    (44, 30, lambda x, y: (clamp(5 * x), 200, clamp(255 - 8 * y))),
    (30, 50, lambda x, y: (0, 0, 0) if (x * y) % 11 == 0 else (230, 230, 200)),
]


def main():
    os.makedirs(HERE, exist_ok=True)
    total = 0
    for i, (w, h, pixel) in enumerate(PATTERNS, start=1):
        data = png(w, h, pixel)
        with open(os.path.join(HERE, f"img-{i:02}.png"), "wb") as f:
            f.write(data)
        total += len(data)
    print(f"{len(PATTERNS)} images, {total} bytes, in {HERE}")


if __name__ == "__main__":
    main()
