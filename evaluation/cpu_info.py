"""What a benchmark ran on: CPU model and the vector extensions that decide int8 speed.

Dynamic int8 matrix multiplication in onnxruntime is fast on CPUs with VNNI (AVX512-VNNI or AVX-VNNI)
and much less so on AVX2 alone, so an int8-vs-fp32 ratio means little without the CPU beside it.
"""

from __future__ import annotations

import os
import platform

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def describe_cpu() -> str:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    have = [f for f in FLAGS if f in flags] or ["none of " + "/".join(FLAGS)]
    return f"{model}, {os.cpu_count()} CPUs, {' '.join(have)}"
