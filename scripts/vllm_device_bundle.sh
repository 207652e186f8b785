#!/usr/bin/env bash
# The vllm backend's real test (tests/test_vllm_backend.py::test_real_model_greedy_and_scores_match_the_hf_backend)
# needs vLLM and a GPU. This builds what a GPU machine with PyTorch but without vLLM needs to run it,
# in parts small enough to carry one per call of a tool that limits each transfer (here 64 MiB with
# the working tree):
#
#   bash scripts/vllm_device_bundle.sh [HAVE_FILE]
#
#   - vLLM $VLLM_VERSION for CPython 3.12 (0.20.x-0.26.0 pin torch 2.11.0, the version on the GPU
#     image used here), without its FlashAttention-2 and MoE kernels (_vllm_fa2_C, _moe_C: 109 MB
#     that a dense float32 model never loads; vLLM imports both inside try blocks);
#   - every package that vLLM (minus torch and its optional GPU kernel packages) and pretty-align
#     import, as found by installing them into a scratch venv here, as cp312 manylinux wheels,
#     leaving out the names listed in HAVE_FILE (one per line or comma-separated: what the GPU image
#     already has);
#   - a tiny random Qwen2 (head_dim 64, which vLLM's attention kernels accept; float32) with the
#     tests' byte-level tokenizer;
#   split into .vllm-part1 ... .vllm-partN (git-ignored through .git/info/exclude) and a runner,
#   .vllm-partN/run.sh. On the GPU machine, from the repository root: `mkdir -p /tmp/parts && cp
#   .vllm-partK/part.* /tmp/parts/` for K < N (one call each, carrying .vllm-partK), then
#   `bash .vllm-partN/run.sh` carrying the last part.
set -euo pipefail
VLLM_VERSION="${VLLM_VERSION:-0.20.2}"
PART_MIB="${PART_MIB:-49}"
root="$(cd "$(dirname "$0")/.." && pwd)"
have="${1:-}"
work="${WORK:-/tmp/vllm-bundle}"
rm -rf "$work" && mkdir -p "$work/stage/deps"
cd "$work"
plat=()
for p in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 \
         manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1 linux; do plat+=(--platform "${p}_x86_64"); done
target=(--no-deps --python-version 3.12 --implementation cp "${plat[@]}")

echo "== vLLM $VLLM_VERSION"
python3 -m venv venv && venv/bin/pip install -q --upgrade pip
venv/bin/pip download -q "${target[@]}" --only-binary=:all: -d . "vllm==$VLLM_VERSION"
whl=$(ls vllm-"$VLLM_VERSION"-*.whl)

echo "== the import closure, found in a scratch venv (CPU torch: vLLM imports without a GPU)"
venv/bin/pip install -q torch==2.13.0
venv/bin/pip install -q --no-deps "$whl"
python3 - "$whl" > reqs.txt <<'EOF'
import re, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
# torch and its companions are on the GPU image; the rest are optional GPU kernel packages that a
# float32 dense model does not load (vLLM imports them lazily or inside try blocks)
skip = {"torch", "torchaudio", "torchvision", "torchcodec", "flashinfer-python", "flashinfer-cubin",
        "apache-tvm-ffi", "tilelang", "nvidia-cudnn-frontend", "fastsafetensors", "nvidia-cutlass-dsl",
        "quack-kernels", "numba", "pynvvideocodec", "tokenspeed-mla", "humming-kernels"}
for line in meta.splitlines():
    if line.startswith("Requires-Dist:") and "extra ==" not in line:
        req = line.split(":", 1)[1].strip()
        if re.split(r"[<>=!;\[ ]", req)[0].lower() not in skip:
            print(req)
EOF
venv/bin/pip install -q -r reqs.txt
venv/bin/pip install -q --no-deps -e "$root"
deps=$(python3 -c 'import sys, tomllib
d = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print(" ".join(x.split(";")[0].strip() for x in d if not x.startswith(("torch", "tomli"))))' "$root/pyproject.toml")
venv/bin/pip install -q $deps
venv/bin/python -c "import vllm, pretty_align.backends.vllm; from vllm import LLM, SamplingParams, EngineArgs; import vllm.v1.engine.core, vllm.model_executor.models.qwen2" 2>&1 | grep -v -E '^(INFO|WARNING)' || true
python3 - "$have" > need.txt <<'EOF'
import re, subprocess, sys
norm = lambda s: re.sub(r"[-_.]+", "-", s.lower())
have = set()
if sys.argv[1]:
    have = {norm(x) for x in re.split(r"[,\s]+", open(sys.argv[1]).read()) if x}
frozen = subprocess.run(["venv/bin/pip", "list", "--format=freeze", "--exclude-editable"],
                        capture_output=True, text=True, check=True).stdout.split()
for line in frozen:
    name, version = line.split("==")
    if norm(name) not in have | {"pip", "torch", "vllm"}:
        print(f"{name}=={version}")
EOF
echo "== $(wc -l < need.txt) packages to carry"
# cp312 manylinux wheels; a package with no wheel (pure Python sdist) is built into one here
while read -r req; do
  venv/bin/pip download -q "${target[@]}" --only-binary=:all: -d stage/deps "$req" 2>/dev/null || \
    venv/bin/pip wheel -q --no-deps -w stage/deps "$req"
done < need.txt

echo "== vLLM without _vllm_fa2_C and _moe_C"
python3 - "$whl" stage/vllm-slim.zip <<'EOF'
import sys, zipfile
skip = ("vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so", "vllm/_moe_C.abi3.so")
with zipfile.ZipFile(sys.argv[1]) as src, zipfile.ZipFile(sys.argv[2], "w") as out:
    for info in src.infolist():
        if info.filename not in skip:
            out.writestr(info, src.read(info.filename), compress_type=info.compress_type)
EOF

echo "== a tiny random Qwen2"
(cd "$root" && PYTHONPATH=tests "$root/.venv/bin/python" - "$work/stage/tiny" <<'EOF'
import sys
from conftest import build_bytelevel_tokenizer, build_model
tok = build_bytelevel_tokenizer()
build_model("qwen2", len(tok), hidden_size=256, intermediate_size=512).save_pretrained(sys.argv[1])
tok.save_pretrained(sys.argv[1])
EOF
)

echo "== parts of $PART_MIB MiB"
tar -cf all.tar -C stage .
sha=$(sha256sum all.tar | cut -c1-16)
split -b "${PART_MIB}M" -d -a 2 all.tar part.
parts=(part.*)
n=${#parts[@]}
rm -rf "$root"/.vllm-part*
for i in $(seq 1 "$n"); do
  mkdir -p "$root/.vllm-part$i" && mv "${parts[$((i - 1))]}" "$root/.vllm-part$i/"
  grep -qx "/.vllm-part$i/" "$root/.git/info/exclude" 2>/dev/null || echo "/.vllm-part$i/" >> "$root/.git/info/exclude"
done
cat > "$root/.vllm-part$n/run.sh" <<EOF
#!/usr/bin/env bash
# Unpack the bundle of scripts/vllm_device_bundle.sh (the earlier parts already in /tmp/parts) and
# run tests/test_vllm_backend.py with the tiny model. Writes the log to \$OUT when set.
set -u -o pipefail
mkdir -p /tmp/parts && cp .vllm-part$n/part.* /tmp/parts/
cat /tmp/parts/part.* > /tmp/all.tar
[ "\$(sha256sum /tmp/all.tar | cut -c1-16)" = "$sha" ] || { echo "parts missing or damaged: \$(ls /tmp/parts)"; exit 3; }
rm -rf /tmp/pkg /tmp/site && mkdir -p /tmp/pkg && tar -xf /tmp/all.tar -C /tmp/pkg
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/pkg/deps/*.whl
python3 -m zipfile -e /tmp/pkg/vllm-slim.zip /tmp/site
export PYTHONPATH=/tmp/site:\$PWD/src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 PYTHONUNBUFFERED=1
export PRETTY_ALIGN_VLLM_MODEL=/tmp/pkg/tiny
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout 400 python3 -m pytest -rA -p no:cacheprovider tests/test_vllm_backend.py 2>&1 | tee "\${OUT:-/tmp}/vllm-tests.log" | grep -E 'PASSED|FAILED|SKIPPED|ERROR|passed|failed'
EOF
echo "$n parts ($(du -sh all.tar | cut -f1) in all, sha256 $sha): .vllm-part1 ... .vllm-part$n; the last runs .vllm-part$n/run.sh"
