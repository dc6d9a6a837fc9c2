#!/usr/bin/env bash
# Build a small program that renders requests and parses replies with llama.cpp's own chat code
# (common/chat*.cpp, the PEG parser, the Jinja engine), from the llama.cpp vendored in the
# llama-cpp-python sdist the project pins. It links the libllama/libggml that llama-cpp-python installed.
#   scripts/llama_cpp_chat/build.sh [WORKDIR]      prints the harness path on its last line
# About 8 minutes on 2 cores. make_fixtures.py uses it to record tests/fixtures/llama_cpp_chat/.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
VERSION="$("$PY" -c 'from lib.models.engine import VERSION; print(VERSION)' 2>/dev/null || echo 0.3.36)"
WORK="${1:-${TMPDIR:-/tmp}/llama-cpp-chat-ref}"
mkdir -p "$WORK/obj"
cd "$WORK"
SDIST="llama_cpp_python-$VERSION.tar.gz"
[ -f "$SDIST" ] || "$PY" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d . >&2
L="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
[ -d "$L/common" ] || tar xzf "$SDIST" "llama_cpp_python-$VERSION/vendor/llama.cpp" "llama_cpp_python-$VERSION/.git/modules/vendor/llama.cpp/HEAD" 2>/dev/null || tar xzf "$SDIST" "llama_cpp_python-$VERSION/vendor/llama.cpp"
LIB="$("$PY" -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("llama_cpp").origin), "lib"))')"
# The few helpers chat.cpp takes from common.cpp, copied out of it (the rest of common.cpp needs the sampler).
{
  echo '#include "common.h"'; echo '#include <regex>'; echo '#include <sstream>'; echo '#include <cstdlib>'
  awk '/^void string_replace_all\(/,/^}/' "$L/common/common.cpp"
  awk '/^std::string string_join\(/,/^}/' "$L/common/common.cpp"
  awk '/^std::vector<std::string> string_split\(const std::string & str, const std::string & delimiter\)/,/^}/' "$L/common/common.cpp"
  awk '/^std::string string_repeat\(/,/^}/' "$L/common/common.cpp"
  echo 'bool tty_can_use_colors() { return false; }'
  echo 'std::vector<llama_token> common_tokenize(const struct llama_vocab *, const std::string &, bool, bool) { abort(); }'
  echo 'std::string common_token_to_piece(const struct llama_vocab *, llama_token, bool) { abort(); }'
} > stubs.cpp
cp "$HERE/harness.cpp" harness.cpp
SRCS="$L/common/chat.cpp $L/common/chat-auto-parser-generator.cpp $L/common/chat-auto-parser-helpers.cpp
      $L/common/chat-diff-analyzer.cpp $L/common/chat-peg-parser.cpp $L/common/peg-parser.cpp
      $L/common/json-schema-to-grammar.cpp $L/common/json-schema.cpp $L/common/json.cpp $L/common/log.cpp
      $L/common/unicode.cpp $L/common/trie.cpp $(ls $L/common/parsers/*.cpp $L/common/jinja/*.cpp) stubs.cpp harness.cpp"
FLAGS="-std=c++17 -O1 -g0 -I$L/common -I$L/include -I$L/ggml/include -I$L/vendor -I$L/src"
OBJS=""
for src in $SRCS; do
  obj="obj/$(basename "${src%.cpp}").o"
  OBJS="$OBJS $obj"
  [ -f "$obj" ] && [ "$obj" -nt "$src" ] && continue
  echo "g++ -c $src" >&2
  g++ $FLAGS -c "$src" -o "$obj" &
  while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-2}" ]; do wait -n; done
done
wait
g++ -o harness $OBJS -L"$LIB" -lllama -lggml -lggml-base -Wl,-rpath,"$LIB" -lpthread
cat "llama_cpp_python-$VERSION/.git/modules/vendor/llama.cpp/HEAD" > llama_cpp_commit 2>/dev/null || echo unknown > llama_cpp_commit
echo "$WORK/harness"
