#!/usr/bin/env python3
"""Writes src/quant/iquants/grids.rs from ggml's src/ggml-common.h and src/ggml-quants.c.

The lattice tables of the i-quants are data: this copies them verbatim, with their lengths.

    git -C GGML_REPO show HEAD:src/ggml-common.h > /tmp/ggml-common.h
    git -C GGML_REPO show HEAD:src/ggml-quants.c > /tmp/ggml-quants.c
    python3 scripts/gen_iquant_grids.py /tmp/ggml-common.h /tmp/ggml-quants.c \
        > src/quant/iquants/grids.rs
"""
import re
import sys

# (ggml name, Rust name, Rust element type, values per line, bits of the index into it)
TABLES = [
    ("kmask_iq2xs", "KMASK_IQ2XS", "u8", 8, 3),
    ("ksigns_iq2xs", "KSIGNS_IQ2XS", "u8", 16, 7),
    ("iq2xxs_grid", "IQ2XXS_GRID", "u64", 4, 8),
    ("iq2xs_grid", "IQ2XS_GRID", "u64", 4, 9),
    ("iq2s_grid", "IQ2S_GRID", "u64", 4, 10),
    ("iq3xxs_grid", "IQ3XXS_GRID", "u32", 8, 8),
    ("iq3s_grid", "IQ3S_GRID", "u32", 8, 9),
    ("iq1s_grid", "IQ1S_GRID", "u64", 4, 11),
]
# The quantizers' packed grid coordinates (2 or 3 bits each), local tables of
# iq2xs_init_impl and iq3xs_init_impl in ggml-quants.c, in the order of the grids above.
KGRIDS = [
    ("kgrid_2bit_256", "KGRID_IQ2XXS", 256),
    ("kgrid_2bit_512", "KGRID_IQ2XS", 512),
    ("kgrid_2bit_1024", "KGRID_IQ2S", 1024),
    ("kgrid_1bit_2048", "KGRID_IQ1S", 2048),
    ("kgrid_256", "KGRID_IQ3XXS", 256),
    ("kgrid_512", "KGRID_IQ3S", 512),
]
C_TYPES = {"u8": "uint8_t", "u32": "uint32_t", "u64": "uint64_t"}
HEX_WIDTH = {"u32": 8, "u64": 16}


def main():
    src = open(sys.argv[1]).read()
    defines = dict(re.findall(r"#define\s+(NGRID_IQ1S|IQ1S_DELTA|IQ1M_DELTA)\s+(\S+)", src))
    out = [
        "//! The lattice tables of the i-quants, copied from ggml's `src/ggml-common.h` by",
        "//! `scripts/gen_iquant_grids.py` (do not edit by hand). Each grid entry packs 8 (or 4)",
        "//! coordinates, one per byte, little-endian: byte j is coordinate j.",
        "",
        f"pub const NGRID_IQ1S: usize = {defines['NGRID_IQ1S']};",
        f"pub const IQ1S_DELTA: f32 = {defines['IQ1S_DELTA'].rstrip('f')};",
        f"pub const IQ1M_DELTA: f32 = {defines['IQ1M_DELTA'].rstrip('f')};",
    ]
    out.append("const _: () = assert!(NGRID_IQ1S == IQ1S_GRID.len());")
    for cname, rname, rty, per_line, bits in TABLES:
        m = re.search(
            r"GGML_TABLE_BEGIN\(\s*" + C_TYPES[rty] + r"\s*,\s*" + cname
            + r"\s*,\s*(\w+)\s*\)(.*?)GGML_TABLE_END\(\)",
            src,
            re.S,
        )
        if not m:
            sys.exit(f"table {cname} not found")
        size = m.group(1)
        n = int(defines.get(size, size))
        vals = [int(v, 0) for v in re.findall(r"0x[0-9a-fA-F]+|\d+", m.group(2))]
        if len(vals) != n or n != 1 << bits:
            sys.exit(f"{cname}: {len(vals)} values, declared {n}, indexed by {bits} bits")
        if rty in HEX_WIDTH:
            w = HEX_WIDTH[rty]
            fmt = [f"0x{v:0{w}x}" for v in vals]
        else:
            fmt = [str(v) for v in vals]
        out.append("")
        out.append(f"/// `{cname}`: {n} entries, indexed by {bits} bits.")
        out.append("#[rustfmt::skip]")
        out.append(f"pub static {rname}: [{rty}; {n}] = [")
        for i in range(0, n, per_line):
            out.append("    " + ", ".join(fmt[i:i + per_line]) + ",")
        out.append("];")
        out.append(f"const _: () = assert!({rname}.len() == 1 << {bits});")
    quants = open(sys.argv[2]).read()
    for cname, rname, n in KGRIDS:
        m = re.search(r"static const uint16_t " + cname + r"\[(\w+)\]\s*=\s*\{(.*?)\};", quants, re.S)
        if not m:
            sys.exit(f"table {cname} not found")
        vals = [int(v) for v in re.findall(r"\d+", m.group(2))]
        if len(vals) != n or int(defines.get(m.group(1), m.group(1))) != n:
            sys.exit(f"{cname}: {len(vals)} values, expected {n}")
        out.append("")
        out.append(f"/// `{cname}` (ggml-quants.c): packed coordinates of each grid point.")
        out.append("#[rustfmt::skip]")
        out.append(f"pub static {rname}: [u16; {n}] = [")
        for i in range(0, n, 16):
            out.append("    " + ", ".join(str(v) for v in vals[i:i + 16]) + ",")
        out.append("];")
    print("\n".join(out))


main()
