#!/usr/bin/env bash
# Regenerates the typed Python code in proto/gen/python from proto/ (the one command for it).
# Messages and grpc.aio stubs come from grpcio-tools; typed .pyi stubs from mypy-protobuf, so
# `mypy --strict` checks every call into a stub. Output is committed; CI fails on any diff.
set -euo pipefail
cd "$(dirname "$0")/.."
out=proto/gen/python
venv_bin=.venv/bin
[ -x "$venv_bin/python" ] || { echo "run 'uv sync' first (no .venv)" >&2; exit 1; }
wkt="$("$venv_bin/python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"
rm -rf "$out/counterpick"
mkdir -p "$out"
mapfile -t protos < <(cd proto && find counterpick -name '*.proto' | LC_ALL=C sort)
(cd proto && "../$venv_bin/python" -m grpc_tools.protoc -I . -I "$wkt" \
  --plugin=protoc-gen-mypy="../$venv_bin/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="../$venv_bin/protoc-gen-mypy_grpc" \
  --python_out="../$out" --grpc_python_out="../$out" \
  --mypy_out="../$out" --mypy_grpc_out="../$out" \
  "${protos[@]}")
# Regular packages (not namespace packages) so wheels, mypy and pytest all see the same tree.
find "$out/counterpick" -type d -exec sh -c 'printf "" > "$1/__init__.py"' _ {} \;
printf '' > "$out/counterpick/py.typed"
echo "generated $(find "$out/counterpick" -name '*_pb2*.py' | wc -l) modules from ${#protos[@]} protos into $out"
