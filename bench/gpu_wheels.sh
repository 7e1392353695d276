#!/usr/bin/env bash
# Prepare what a GPU machine without network needs to run bench/gpu_check.sh, on a machine that
# reaches PyPI: the locked versions (requirements.lock) of the packages the machine's image
# lacks, for CPython 3.12 on manylinux, installed into a folder and packed as .site.tar.xz in the
# repository root (ignored by git; carry it to the GPU machine with the checkout).
#
#   bench/gpu_wheels.sh          # the throughput and ensemble benchmarks: pydantic and its parts
#   bench/gpu_wheels.sh --full   # also the whole lifecycle (MLflow, Prefect, DVC, Great Expectations)
#                                # for the timed `gandefect run`, without BentoML (the check leaves the
#                                # bento stage out) and the test-only tools. Its 153 wheels are about
#                                # 70 MiB, over what one device call carries (64 MiB); installed (256 MiB)
#                                # and packed with xz they were 42 MiB.
#
# The GPU image brings its own torch (a CUDA build), numpy, pandas, scipy, scikit-learn,
# Pillow, PyYAML, typer, rich and pytest: PRESENT lists what is not downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PRESENT='^(torch|triton|nvidia-.*|numpy|pandas|scipy|scikit-learn|scikit-image|pillow|pyyaml|typer|rich|click|jinja2|markupsafe|requests|urllib3|idna|certifi|charset-normalizer|packaging|typing-extensions|six|python-dateutil|pytz|tzdata|matplotlib|contourpy|cycler|fonttools|kiwisolver|pyparsing|joblib|threadpoolctl|networkx|sympy|mpmath|filelock|fsspec|psutil|protobuf|pyarrow|anyio|h11|httpcore|httpx|sniffio|attrs|aiohttp|aiosignal|frozenlist|multidict|yarl|propcache|aiohappyeyeballs|markdown|markdown-it-py|mdurl|pygments|werkzeug|prometheus-client|cloudpickle|toolz|msgpack|wrapt|zipp|importlib-metadata|tabulate|grpcio|shellingham|uvloop|xxhash|tqdm|pluggy|iniconfig|pytest|pytest-timeout|hypothesis|sortedcontainers|colorama|imageio|tifffile|lazy-loader|opt-einsum|ml-dtypes|regex|lxml|pyproject-hooks|build|setuptools|pip|wheel)=='
# test tools; the bento stage; the servers, task queues and plugins nothing in a run imports
SKIP='^(playwright|ruff|bentoml|a2wsgi|simple-di|celery|amqp|billiard|kombu|vine|click-didyoumean|click-plugins|click-repl|flask|flask-cors|gunicorn|itsdangerous|blinker|graphene|graphql-core|graphql-relay|docker|pygit2|hydra-core|omegaconf|antlr4-python3-runtime|gto|huey|burner-redis|pyzmq|kantoku|skops)=='
BASE='^(pydantic|pydantic-core|annotated-types|typing-inspection)=='

requirements=$(grep -E '^[A-Za-z0-9]' requirements.lock | sed -E 's/ .*//; s/\\$//' | tr 'A-Z_' 'a-z-')
if [ "${1:-}" = "--full" ]; then
  wanted=$(echo "$requirements" | grep -Ev "$PRESENT" | grep -Ev "$SKIP")
else
  wanted=$(echo "$requirements" | grep -E "$BASE")
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platforms=(--python-version 3.12 --implementation cp --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
missing=()
while read -r req; do
  [ -n "$req" ] || continue
  if python3 -m pip download -q --no-deps --only-binary=:all: "${platforms[@]}" -d "$work/wheels" "$req" 2>/dev/null; then
    continue
  fi
  # a pure-Python package published as source only: built here, installed as it is there
  python3 -m pip install -q --no-deps --no-compile --target "$work/site" "$req" 2>/dev/null || missing+=("$req")
done <<<"$wanted"
if [ ${#missing[@]} -gt 0 ]; then
  echo "not found: ${missing[*]}" >&2
  exit 1
fi
python3 -m pip install -q --no-deps --no-index --no-compile --upgrade --only-binary=:all: "${platforms[@]}" \
  --target "$work/site" "$work"/wheels/*.whl
grep -qx '/.site.tar.xz' .git/info/exclude 2>/dev/null || echo '/.site.tar.xz' >>.git/info/exclude
tar -C "$work/site" -cf - . | xz -6 -T0 >.site.tar.xz
echo "$(ls "$work/wheels" | wc -l) wheels, installed $(du -sh "$work/site" | cut -f1), packed $(du -h .site.tar.xz | cut -f1) in .site.tar.xz (a device call carries 64 MiB in all)"
