#!/usr/bin/env bash
# One command for a GPU machine: builds mamba-ssm for this GPU only (or reuses the wheel it built before),
# runs the `gpu` tests and every benchmark's GPU rows, and writes one markdown report (stdout and
# data/gpu_check/RESULTS.md, next to the raw JSON and logs; also copied to $OUT when that is set).
#
#   scripts/gpu_check.sh                        # on the GPU machine; needs no network
#   scripts/gpu_check.sh --with-causal-conv1d   # also build causal-conv1d (about 5 minutes more)
#   scripts/gpu_check.sh --fetch                # on a machine with network: fill .whl/ first
#
# It runs on the machine's own Python and PyTorch (GPU_CHECK_PYTHON, else the first python3/python that
# imports torch) with PYTHONPATH=.whl/site-<tag>:<repo>; the project is not installed (its Python pin need
# not match). .whl/ (git-ignored; carry it to the machine) holds the mamba-ssm and causal-conv1d sdists and
# the pure-Python wheels of FETCH_WHEELS, each installed only when its import fails. Built wheels are kept
# in .whl/built/<tag> (tag: Python, torch, CUDA, GPU architecture, dtypes). Exit status: 1 without a GPU,
# 2 when a step failed, 0 when all passed. Never assign CC here: nvcc and Triton read the machine's CC.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
MAMBA_SDIST_VERSION=2.3.2.post1
CONV_SDIST_VERSION=1.7.0
FETCH_WHEELS="tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1 typing-extensions==4.16.0 mambapy==1.2.0
einops==0.8.1 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pygments==2.21.0 ninja==1.13.0 packaging==26.4
wheel==0.48.0"
# import name : wheel name prefix, installed from .whl/ when the import fails (dependencies first); packaging
# and wheel are what mamba-ssm's setup.py imports
NEEDED="docstring_parser:docstring_parser typing_extensions:typing_extensions typeguard:typeguard tyro:tyro
mambapy:mambapy einops:einops packaging:packaging pluggy:pluggy iniconfig:iniconfig pygments:pygments
pytest:pytest wheel:wheel"
DTYPES=${GPU_CHECK_DTYPES:-fp32 bf16}  # mamba-ssm scan kernels to build (each dtype adds ~1 minute)
OUT_DIR=data/gpu_check
with_conv=0

fetch() {  # pip download, on a machine with network: sdists (metadata needs torch, hence the venv) + wheels
    local pip_py=python3
    [ -x .venv/bin/python ] && pip_py=.venv/bin/python
    mkdir -p .whl
    MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE "$pip_py" -m pip download -q --no-deps \
        --no-binary :all: --no-build-isolation -d .whl "mamba-ssm==$MAMBA_SDIST_VERSION" \
        "causal-conv1d==$CONV_SDIST_VERSION" || return 1
    # shellcheck disable=SC2086  # one word per requirement
    "$pip_py" -m pip download -q --no-deps --only-binary :all: -d .whl $FETCH_WHEELS || return 1
    echo "gpu_check: .whl/ holds $(find .whl -maxdepth 1 -type f | wc -l) files ($(du -sh .whl | cut -f1))"
}

for arg in "$@"; do
    case "$arg" in
        --fetch) fetch; exit $? ;;
        --with-causal-conv1d) with_conv=1 ;;
        *) echo "usage: scripts/gpu_check.sh [--with-causal-conv1d | --fetch]" >&2; exit 64 ;;
    esac
done

# --------------------------------------------------------------------------------------------- the GPU
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no GPU here (nvidia-smi is missing or lists no device); nothing to check"
    exit 1
fi
py=""
for candidate in ${GPU_CHECK_PYTHON:-} python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" >/dev/null 2>&1; then
        py=$candidate
        break
    fi
done
if [ -z "$py" ]; then
    echo "gpu_check: no GPU check possible (no python3/python here imports torch; set GPU_CHECK_PYTHON)"
    exit 1
fi
if ! "$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    echo "gpu_check: no GPU here (torch.cuda.is_available() is False for $py)"
    exit 1
fi

# ------------------------------------------------------------------------------------------ bookkeeping
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/*.json "$OUT_DIR"/*.log "$OUT_DIR"/steps.tsv "$OUT_DIR"/pytest.xml
failed=0
record() {  # step, result (ok|failed|skipped), seconds, detail: one line of steps.tsv
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4//$'\t'/ }" >>"$OUT_DIR/steps.tsv"
    [ "$2" = failed ] && failed=1
    echo "[gpu_check] $1: $2 (${3}s) $4"
}
last_line() { grep -v '^\s*$' "$1" 2>/dev/null | tail -n 1 | cut -c1-160; }

sm=$("$py" -c "import torch; print('%d%d' % torch.cuda.get_device_capability())")
arch="${sm:0:${#sm}-1}.${sm: -1}"  # 90 -> 9.0, 100 -> 10.0 (TORCH_CUDA_ARCH_LIST)
tag=$("$py" -c "import sys, torch; v = sys.version_info
print(f'py{v[0]}{v[1]}-torch{torch.__version__}-cu{torch.version.cuda}')")
tag="${tag//+/_}-sm$sm"
site=".whl/site-$tag"
mkdir -p "$site"
export PYTHONPATH="$REPO/$site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
record gpu ok 0 "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n 1); $py; $tag"

install_wheel() {  # unzip a wheel into $site (pure wheels and our built ones need nothing more)
    "$py" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$1" "$site"
}

# ------------------------------------------------------------------------------- pure-Python packages
start=$SECONDS
missing=()
for pair in $NEEDED; do
    module=${pair%%:*}
    "$py" -c "import $module" >/dev/null 2>&1 && continue
    wheel=$(find .whl -maxdepth 1 -name "${pair##*:}-*.whl" | sort | tail -n 1)
    if [ -n "$wheel" ]; then install_wheel "$wheel"; else missing+=("$module"); fi
done
if ! command -v ninja >/dev/null 2>&1; then  # without ninja, torch builds extensions one file at a time
    wheel=$(find .whl -maxdepth 1 -name "ninja-*.whl" | sort | tail -n 1)
    [ -n "$wheel" ] && install_wheel "$wheel"
    tool=$(find "$site" -type f -name ninja | head -n 1)
    if [ -n "$tool" ]; then chmod +x "$tool"; export PATH="$(dirname "$tool"):$PATH"; fi
fi
probe=$("$py" -c "import tyro, yaml, numpy, pytest, einops" 2>&1 | tail -n 1)
if [ -n "$probe" ] && ! "$py" -c "import tyro" >/dev/null 2>&1; then  # an older typing_extensions?
    wheel=$(find .whl -maxdepth 1 -name "typing_extensions-*.whl" | sort | tail -n 1)
    [ -n "$wheel" ] && install_wheel "$wheel"
    probe=$("$py" -c "import tyro, yaml, numpy, pytest, einops" 2>&1 | tail -n 1)
fi
if [ ${#missing[@]} -eq 0 ] && [ -z "$probe" ]; then
    record "python packages" ok $((SECONDS - start)) "site $site"
else
    record "python packages" failed $((SECONDS - start)) \
        "missing: ${missing[*]} ${probe} (run --fetch, carry .whl/)"
fi

# --------------------------------------------------------------------------------- the CUDA extensions
cuda_home=${CUDA_HOME:-}
if [ -z "$cuda_home" ]; then
    if [ -x /usr/local/cuda/bin/nvcc ]; then cuda_home=/usr/local/cuda
    elif command -v nvcc >/dev/null 2>&1; then cuda_home=$(dirname "$(dirname "$(command -v nvcc)")")
    fi
fi

patch_sources() {  # $1 = source folder, $2 = package name: this GPU's architecture only, fewer kernels
    "$py" - "$1" "$2" "$sm" "$DTYPES" <<'PATCH'
import re, sys
from pathlib import Path

src, name, sm, dtypes = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].split()

def edit(path, old, new, count=1, regex=False):
    text = path.read_text()
    found = len(re.findall(old, text)) if regex else text.count(old)
    if found < count:
        sys.exit(f"gpu_check: cannot patch {path.name}: {old!r} not found ({name} changed?)")
    path.write_text(re.sub(old, new, text) if regex else text.replace(old, new))

anchor = "    # HACK: The compiler flag -D_GLIBCXX_USE_CXX11_ABI"
only_here = f'    cc_flag = ["-gencode", "arch=compute_{sm},code=sm_{sm}"]  # gpu_check.sh\n'
edit(src / "setup.py", anchor, only_here + anchor)
import torch.utils.cpp_extension as ext  # newer PyTorch headers stop at "C++20 or later ... is required"

if "C++20" in (Path(ext.include_paths()[0]) / "ATen" / "ATen.h").read_text():
    edit(src / "setup.py", '"-std=c++17"', '"-std=c++20"')
if name == "mamba_ssm":
    ctypes = {"fp32": ("Float", "float"), "bf16": ("BFloat16", "at::BFloat16"), "fp16": ("Half", "at::Half")}
    keep = [f"selective_scan_{f}.cu" for d in dtypes for f in (f"fwd_{d}", f"bwd_{d}_real")]
    setup = src / "setup.py"
    setup.write_text("".join(
        line for line in setup.read_text().splitlines(keepends=True)
        if not re.search(r'"csrc/selective_scan/selective_scan_(fwd|bwd)_\w+\.cu"', line)
        or any(k in line for k in keep)
    ))
    cpp = src / "csrc/selective_scan/selective_scan.cpp"
    branches = " else ".join(
        f"if (ITYPE == at::ScalarType::{ctypes[d][0]}) {{ using input_t = {ctypes[d][1]}; __VA_ARGS__(); }}"
        for d in dtypes)
    fail = "{{ AT_ERROR(#NAME, \" not built for {0} type '\", toString({1}), \"' (gpu_check.sh)\"); }}\n"
    macros = (
        f"#define DISPATCH_ITYPE_GPU_CHECK(ITYPE, NAME, ...) {branches} else " + fail.format("input", "ITYPE")
        + "#define DISPATCH_WTYPE_GPU_CHECK(WTYPE, NAME, ...) if (WTYPE == at::ScalarType::Float) "
        "{ using weight_t = float; __VA_ARGS__(); } else " + fail.format("weight", "WTYPE")
    )
    edit(cpp, '#include "selective_scan.h"\n', '#include "selective_scan.h"\n' + macros)
    edit(cpp, r"(?<!#define )DISPATCH_ITYPE_FLOAT_AND_HALF_AND_BF16\(", "DISPATCH_ITYPE_GPU_CHECK(", 2, True)
    edit(cpp, r"(?<!#define )DISPATCH_WTYPE_FLOAT_AND_COMPLEX\(", "DISPATCH_WTYPE_GPU_CHECK(", 2, True)
    for d in dtypes:  # the forward files also instantiate complex weights, which nothing here uses
        forward = src / f"csrc/selective_scan/selective_scan_fwd_{d}.cu"
        edit(forward, r"template void [^\n]*complex_t>[^\n]*\n?", "", 1, True)
    init = src / "mamba_ssm/__init__.py"  # Mamba2/3 and the LM need transformers, tilelang...: optional
    for module in ("modules.mamba2", "modules.mamba3", "models.mixer_seq_simple"):
        edit(init, re.compile(rf"^(from mamba_ssm\.{re.escape(module)} import \w+)$", re.M),
             r"try:\n    \1\nexcept ImportError:\n    pass", 1, True)
PATCH
}

build() {  # $1 = package (mamba_ssm | causal_conv1d), $2 = sdist version: build or reuse, then install
    local name=$1 version=$2 start=$SECONDS work wheel built
    built=".whl/built/$name-$version-$tag-${DTYPES// /-}"
    wheel=$(find "$built" -name "*.whl" 2>/dev/null | head -n 1)
    if [ -z "$wheel" ]; then
        local sdist=".whl/$name-$version.tar.gz"
        if [ ! -f "$sdist" ]; then
            record "$name build" failed 0 "no $sdist (run --fetch, carry .whl/)"; return
        fi
        if [ -z "$cuda_home" ]; then record "$name build" failed 0 "no nvcc (set CUDA_HOME)"; return; fi
        work=$(mktemp -d)
        tar xzf "$sdist" -C "$work"
        if ! patch_sources "$work/$name-$version" "$name" >"$OUT_DIR/build-$name.log" 2>&1; then
            record "$name build" failed $((SECONDS - start)) "$(last_line "$OUT_DIR/build-$name.log")"; return
        fi
        mkdir -p "$built"
        (cd "$work/$name-$version" && CUDA_HOME=$cuda_home TORCH_CUDA_ARCH_LIST=$arch \
            MAX_JOBS=${MAX_JOBS:-$(( $(nproc) < 8 ? $(nproc) : 8 ))} MAMBA_FORCE_BUILD=TRUE \
            CAUSAL_CONV1D_FORCE_BUILD=TRUE timeout "${GPU_CHECK_BUILD_TIMEOUT:-900}" \
            "$py" -m pip wheel -v --no-build-isolation --no-deps --no-index -w "$REPO/$built" .) \
            >>"$OUT_DIR/build-$name.log" 2>&1
        rm -rf "$work"
        wheel=$(find "$built" -name "*.whl" | head -n 1)
        if [ -z "$wheel" ]; then
            local why
            why=$(grep -m1 -i 'error' "$OUT_DIR/build-$name.log" | cut -c1-160)
            record "$name build" failed $((SECONDS - start)) "$why"
            return
        fi
    fi
    install_wheel "$wheel"
    local probe
    probe=$("$py" -c "import $name" 2>&1 | tail -n 1)
    if [ -n "$probe" ]; then record "$name build" failed $((SECONDS - start)) "import: $probe"; return; fi
    record "$name build" ok $((SECONDS - start)) "$(basename "$wheel") ($DTYPES, sm_$sm)"
}
[ "$with_conv" = 1 ] && build causal_conv1d "$CONV_SDIST_VERSION"
build mamba_ssm "$MAMBA_SDIST_VERSION"

# ------------------------------------------------------------------------------------ tests, benchmarks
start=$SECONDS
mapfile -t gpu_tests < <(grep -rl --include='test_*.py' 'mark.gpu' tests | sort)
timeout 900 "$py" -m pytest -m gpu -q -rs -p no:cacheprovider --junitxml="$OUT_DIR/pytest.xml" \
    "${gpu_tests[@]}" >"$OUT_DIR/pytest.log" 2>&1
status=$?
result=ok; [ $status -ne 0 ] && result=failed
record "pytest -m gpu" $result $((SECONDS - start)) "$(last_line "$OUT_DIR/pytest.log")"

bench() {  # $1 = name of the result, $2 = time limit (s), then the module and its arguments
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    if timeout "$limit" "$py" -m "$@" --json >"$OUT_DIR/$name.json" 2>"$OUT_DIR/$name.log"; then
        record "$name" ok $((SECONDS - start)) "$*"
    else
        record "$name" failed $((SECONDS - start)) "$* -> $(last_line "$OUT_DIR/$name.log")"
    fi
}
bench executor_step 240 benchmarks.bench_executor_step --skip-cpu
bench executor_step_shipped 180 benchmarks.bench_executor_step --skip-cpu --d-model 64 --layers 2
bench strategist 180 benchmarks.bench_strategist --skip-cpu
bench mamba 240 benchmarks.bench_mamba
bench training 420 benchmarks.bench_training --device cuda --preset gpu
bench training_loop 180 benchmarks.bench_training_loop --device cuda

# ------------------------------------------------------------------------------------------- the report
"$py" - "$OUT_DIR" <<'REPORT' | tee "$OUT_DIR/RESULTS.md"
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

out = Path(sys.argv[1])

def table(rows, columns):
    cell = lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)).replace("|", "/")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows])

steps = [dict(zip(("step", "result", "seconds", "detail"), line.split("\t")))
         for line in (out / "steps.tsv").read_text().splitlines()]
print("# GPU check\n")
print(table(steps, ("step", "result", "seconds", "detail")))
if (out / "pytest.xml").exists():
    suite = ET.parse(out / "pytest.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {k: suite.get(k, "0") for k in ("tests", "failures", "errors", "skipped")}
    print("\npytest -m gpu: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for case in suite.iter("testcase"):
        for verdict in ("failure", "error", "skipped"):
            node = case.find(verdict)
            if node is not None:
                message = ((node.get("message") or "").splitlines() or [""])[0][:150]
                print(f"- {verdict}: {case.get('name')}: {message}")
machine = None
for path in sorted(out.glob("*.json")):
    text = path.read_text()
    try:
        data = json.loads(text[text.index("{"):])
    except ValueError:
        print(f"\n## {path.stem}\n\nno JSON (see {path.stem}.log)")
        continue
    machine = machine or data.get("machine")
    rows = data.get("rows", [])
    print(f"\n## {path.stem}: {data.get('title', '')}\n")
    print(table(rows, list(dict.fromkeys(k for r in rows for k in r))))
    for key, value in data.items():
        if key not in ("title", "rows", "machine"):
            print(f"- {key}: {value}")
print(f"\nmachine: {machine}")
REPORT
[ -n "${OUT:-}" ] && [ -d "${OUT:-}" ] && cp -r "$OUT_DIR" "$OUT/"
[ $failed -eq 0 ] || exit 2
