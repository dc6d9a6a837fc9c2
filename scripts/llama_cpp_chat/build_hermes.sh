#!/usr/bin/env bash
# Build the reference for the older Hermes 2 Pro rule: llama.cpp's chat code as vendored in
# llama-cpp-python 0.3.16 (llama.cpp 4227c9be4268ac844921b90f31595f81236bd317, August 2025), the
# last generation before the differential autoparser. Links the libllama that llama-cpp-python installed.
#   scripts/llama_cpp_chat/build_hermes.sh [WORKDIR]      prints the harness path on its last line
# About 5 minutes on 2 cores.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
VERSION=0.3.16
WORK="${1:-${TMPDIR:-/tmp}/llama-cpp-chat-hermes}"
mkdir -p "$WORK/obj"
cd "$WORK"
SDIST="llama_cpp_python-$VERSION.tar.gz"
[ -f "$SDIST" ] || "$PY" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d . >&2
L="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
[ -d "$L/common" ] || tar xzf "$SDIST" "llama_cpp_python-$VERSION/vendor/llama.cpp" "llama_cpp_python-$VERSION/.git/modules/vendor/llama.cpp/HEAD"
LIB="$("$PY" -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("llama_cpp").origin), "lib"))')"
{
  printf '#include <chrono>\n#include <cinttypes>\n#include <ctime>\n#include "common.h"\n#include <regex>\n#include <sstream>\n#include <cstdlib>\n#include <algorithm>\n'
  for fn in '^std::string string_strip\(' '^void string_replace_all\(' '^bool string_ends_with\(' '^size_t string_find_partial_stop\(' \
            '^std::string regex_escape\(' '^std::string string_join\(' \
            '^std::vector<std::string> string_split\(const std::string & str, const std::string & delimiter\)' '^std::string string_repeat\('; do
    awk "/$fn/,/^}/" "$L/common/common.cpp"
  done
  echo 'bool tty_can_use_colors() { return false; }'
  echo 'std::string common_token_to_piece(const struct llama_vocab *, llama_token, bool) { abort(); }'
} > stubs.cpp
cp "$HERE/harness_hermes.cpp" harness.cpp
FLAGS="-std=c++17 -O1 -g0 -I$L/common -I$L/include -I$L/ggml/include -I$L/vendor"
OBJS=""
for src in $L/common/chat.cpp $L/common/chat-parser.cpp $L/common/json-partial.cpp $L/common/regex-partial.cpp \
           $L/common/json-schema-to-grammar.cpp $L/common/log.cpp stubs.cpp harness.cpp; do
  obj="obj/$(basename "${src%.cpp}").o"
  OBJS="$OBJS $obj"
  [ -f "$obj" ] && [ "$obj" -nt "$src" ] && continue
  echo "g++ -c $src" >&2
  g++ $FLAGS -c "$src" -o "$obj" &
  while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-2}" ]; do wait -n; done
done
wait
g++ -o harness $OBJS -L"$LIB" -lllama -lggml -lggml-base -Wl,-rpath,"$LIB" -lpthread
cat "llama_cpp_python-$VERSION/.git/modules/vendor/llama.cpp/HEAD" > llama_cpp_commit
echo "$WORK/harness"
